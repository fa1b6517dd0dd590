"""Interleaved timing: run the candidates in turns so machine noise hits them alike; report medians."""
import statistics
import time
from typing import Callable


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 30, inner: int = 1, warmup: int = 3) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def report(title: str, base: str, medians: dict[str, float], limit: float | None = None) -> float:
    print(f"== {title}")
    for name, t in medians.items():
        print(f"  {name:<28} {t * 1e3:9.3f} ms (median)")
    cand = [k for k in medians if k != base][0]
    ratio = medians[cand] / medians[base]
    verdict = "" if limit is None else ("  OK" if ratio <= limit else f"  OVER the {limit} goal")
    print(f"  ratio {cand}/{base} = {ratio:.3f}{verdict}")
    return ratio
