"""The statistics extension, counted as Triton counts them: `inference_count` in rows,
`execution_count` in model runs, and per-request durations (success, fail, queue, compute) as
{"count", "ns"} pairs. `GET /v2/models/{name}/stats` returns `Stats.report(name)`."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any


class Duration:
    def __init__(self) -> None:
        self.count, self.ns = 0, 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class Stats:
    """Counters for one model; updated from the event loop, read by the stats route."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inference_count = 0  # rows answered
        self.execution_count = 0  # model runs
        self.last_inference = 0  # ms since the epoch
        self.success, self.fail, self.queue, self.infer = Duration(), Duration(), Duration(), Duration()
        self.batches: dict[int, Duration] = defaultdict(Duration)  # rows per run -> that size's compute time

    def executed(self, rows: int, seconds: float) -> None:
        with self.lock:
            self.execution_count += 1
            self.batches[rows].add(seconds)
            self.last_inference = int(time.time() * 1000)

    def answered(self, rows: int, queued: float, total: float) -> None:
        """One request answered: it waited `queued` seconds, and `total` from arrival to answer."""
        with self.lock:
            self.inference_count += rows
            self.success.add(total)
            self.queue.add(queued)
            self.infer.add(total - queued)

    def failed(self, total: float) -> None:
        with self.lock:
            self.fail.add(total)

    def report(self, name: str) -> dict[str, Any]:
        with self.lock:
            zero = Duration().as_dict()
            inference = {"success": self.success.as_dict(), "fail": self.fail.as_dict(), "queue": self.queue.as_dict(),
                         "compute_input": zero, "compute_infer": self.infer.as_dict(), "compute_output": zero,
                         "cache_hit": zero, "cache_miss": zero}
            batches = [{"batch_size": n, "compute_input": zero, "compute_infer": d.as_dict(), "compute_output": zero}
                       for n, d in sorted(self.batches.items())]
            return {"model_stats": [{"name": name, "version": "1", "last_inference": self.last_inference,
                                     "inference_count": self.inference_count, "execution_count": self.execution_count,
                                     "inference_stats": inference, "batch_stats": batches, "memory_usage": []}]}
