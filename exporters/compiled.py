"""torch.compile check: compiled output against eager output, and the warm speed ratio."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from .artifact import Artifact
from .blame import root_cause
from .capture import capture
from .errors import ExportError
from .job import ExportJob


def compile_module(job: ExportJob) -> tuple[Artifact, Callable]:
    """Compile with dynamic shapes and run once (the cold compile), so later calls are warm."""
    module, example = job.module, job.example
    start = time.perf_counter()
    with capture() as cap:
        try:
            compiled = torch.compile(module, dynamic=True)
            with torch.no_grad():
                compiled(*example)
        except Exception as e:
            raise ExportError("compile", f"torch.compile failed: {root_cause(e)}",
                              "torch.compile needs a working C++ compiler for the CPU backend") from None
    art = Artifact("compile", None, time.perf_counter() - start, ["compiled in memory, not saved"], cap.summary(),
                   "inductor")
    return art, lambda xs: compiled(*xs)


def speed_ratio(eager: Callable[[], Any], compiled: Callable[[], Any], rounds: int = 20) -> float:
    """eager time / compiled time, medians of interleaved warm runs (> 1: compiled is faster)."""
    te, tc = [], []
    with torch.no_grad():
        for f in (eager, compiled):
            f()
        for _ in range(rounds):
            for f, sink in ((eager, te), (compiled, tc)):
                t0 = time.perf_counter()
                f()
                sink.append(time.perf_counter() - t0)
    return statistics.median(te) / statistics.median(tc)
