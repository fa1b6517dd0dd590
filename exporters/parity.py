"""Parity: each artifact, reloaded from disk, against the eager model at every size combination.

Element-wise tolerance `|got - ref| <= atol + rtol * |ref|`. Each check reports the max absolute
and relative error, the fraction of elements out of tolerance, the worst element (index and both
values), NaN/Inf counts and the verdict.
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch

from compiler.errors import first_line

from compiler.spec import InputDecl

from .inputs import make_inputs

Runner = Callable[[list[torch.Tensor]], Any]


@dataclass
class Check:
    format: str
    sizes: dict[str, int]
    shapes: dict[str, list[int]]
    max_abs_err: float
    max_rel_err: float
    out_of_tolerance: float  # fraction of elements
    worst: dict[str, Any]
    nan: int
    inf: int
    passed: bool
    error: str = ""


@dataclass
class ParityReport:
    passed: bool
    checks: list[Check]
    atol: float
    rtol: float
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    compile_speedup: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    divergence: dict[str, Any] | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    trained: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flatten(o)]
    raise TypeError(f"unexpected model output {type(out).__name__}")


@dataclass
class Tolerance:
    """How `got` stands against `ref` element-wise: |got - ref| <= atol + rtol * |ref|."""

    diff: torch.Tensor  # |got - ref|, NaN where exactly one is NaN read as inf
    allowed: torch.Tensor
    max_abs: float
    bad: int  # elements out of tolerance


def tolerance(ref: torch.Tensor, got: torch.Tensor, atol: float, rtol: float) -> Tolerance:
    r, g = ref.detach().double().cpu(), got.detach().double().cpu()
    both_nan = torch.isnan(r) & torch.isnan(g)
    diff = torch.nan_to_num(torch.where(both_nan, torch.zeros_like(r), (g - r).abs()), nan=float("inf"))
    allowed = atol + rtol * r.abs()
    return Tolerance(diff, allowed, float(diff.max()) if diff.numel() else 0.0, int((diff > allowed).sum()))


def compare(fmt: str, sizes: dict, xs: list[torch.Tensor], names: list[str], ref: list[torch.Tensor],
            got: list[torch.Tensor], atol: float, rtol: float, input_names: list[str]) -> Check:
    shapes = {n: list(x.shape) for n, x in zip(input_names, xs)}
    if len(ref) != len(got):
        return Check(fmt, sizes, shapes, float("inf"), float("inf"), 1.0, {}, 0, 0, False,
                     f"{len(got)} outputs, expected {len(ref)}")
    max_abs = max_rel = 0.0
    bad = total = nan = inf = 0
    worst: dict[str, Any] = {}
    worst_excess = -1.0
    for name, r, g in zip(names, ref, got):
        r, g = r.detach().double().cpu(), g.detach().double().cpu()
        if r.shape != g.shape:
            return Check(fmt, sizes, shapes, float("inf"), float("inf"), 1.0, {"output": name}, 0, 0, False,
                         f"output '{name}' has shape {tuple(g.shape)}, expected {tuple(r.shape)}")
        nan += int(torch.isnan(g).sum())
        inf += int(torch.isinf(g).sum())
        t = tolerance(r, g, atol, rtol)
        diff, allowed = t.diff, t.allowed
        bad += t.bad
        total += r.numel()
        if r.numel():
            max_abs = max(max_abs, t.max_abs)
            rel = diff / r.abs().clamp_min(1e-12)
            max_rel = max(max_rel, float(torch.nan_to_num(rel, nan=0.0).max()))
            excess = diff - allowed
            i = int(excess.flatten().argmax())
            if float(excess.flatten()[i]) > worst_excess:
                worst_excess = float(excess.flatten()[i])
                idx = list(torch.unravel_index(torch.tensor(i), r.shape)) if r.dim() else []
                worst = {"output": name, "index": [int(v) for v in idx], "got": float(g.flatten()[i]),
                         "ref": float(r.flatten()[i])}
    frac = bad / total if total else 0.0
    return Check(fmt, sizes, shapes, max_abs, max_rel, frac, worst, nan, inf, bad == 0)


def run_checks(module: torch.nn.Module, inputs: Mapping[str, InputDecl], output_names: list[str],
               runners: Mapping[str, Runner], grid: list[dict[str, int]], atol: float, rtol: float,
               seed: int = 0) -> list[Check]:
    checks = []
    names = list(inputs)
    module.train(False)  # eval mode
    with torch.no_grad():
        for sizes in grid:
            xs = make_inputs(inputs, sizes, seed)
            ref = flatten(module(*xs))
            for fmt, run in runners.items():
                try:
                    got = flatten(run([x.clone() for x in xs]))
                except Exception as e:
                    checks.append(Check(fmt, sizes, {n: list(x.shape) for n, x in zip(names, xs)}, float("inf"),
                                        float("inf"), 1.0, {}, 0, 0, False, first_line(e)))
                    continue
                checks.append(compare(fmt, sizes, xs, output_names, ref, got, atol, rtol, names))
    return checks


def latency(inputs: Mapping[str, InputDecl], runners: Mapping[str, Runner], sizes_list: list[dict[str, int]],
            rounds: int = 30) -> dict[str, dict[str, float]]:
    """Median ms per call for each runner at each size. Each runner is timed in its own block:
    torch's OpenMP threads keep spinning after an eager call and would slow an onnxruntime call
    interleaved right after it."""
    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for sizes in sizes_list:
            label = ",".join(f"{k}={v}" for k, v in sizes.items()) or "fixed"
            xs = make_inputs(inputs, sizes, 0)
            for name, run in runners.items():
                for _ in range(3):
                    run(xs)
                times = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    run(xs)
                    times.append((time.perf_counter() - t0) * 1e3)
                out.setdefault(name, {})[label] = round(statistics.median(times), 4)
    return out


def environment(opset: int | None, extra: dict[str, str]) -> dict[str, Any]:
    import onnx
    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "onnx": onnx.__version__, "opset": opset, "threads": torch.get_num_threads()}
    try:
        import onnxscript
        env["onnxscript"] = onnxscript.__version__
    except ImportError:
        env["onnxscript"] = "missing"
    env.update(extra)
    return env
