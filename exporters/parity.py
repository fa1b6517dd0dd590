"""Parity: each artifact, reloaded from disk, against the eager model at every size combination.

Element-wise tolerance `|got - ref| <= atol + rtol * |ref|` (`tolerance`, the one comparison every
check and the divergence search use). Each check reports the max absolute and relative error, the
fraction of elements out of tolerance, the worst element (index and both values), NaN/Inf counts
and the verdict. Deployment variants (int8, fp16, optimized graphs) get metric checks instead
(`kind: metric`, see `variants`), and each file format a declared-shape check (see `declared`).
"""
from __future__ import annotations

import contextlib
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

import torch

from compiler.spec import InputDecl

from .blame import root_cause
from .inputs import make_inputs

Runner = Callable[[list[torch.Tensor]], Any]


@dataclass
class Comparison:
    max_abs_err: float
    max_rel_err: float
    out_of_tolerance: float  # fraction of elements
    worst: dict[str, Any]
    nan: int
    inf: int
    passed: bool
    error: str = ""


@dataclass(kw_only=True)
class Check(Comparison):
    """One comparison of a format at one set of sizes (or a deployment variant's metric check)."""
    format: str
    sizes: dict[str, int]
    shapes: dict[str, list[int]]
    kind: str = "values"  # values: element-wise against eager; metric: a deployment variant's task metric
    metric: dict[str, Any] | None = None  # {name, reference, quantized, drop, max_drop, on}
    size_mb: dict[str, float] | None = None  # {fp32, variant, ratio}
    latency_ms: dict[str, dict[str, float]] | None = None  # {fp32: {sizes: ms}, variant: {...}}
    note: str = ""

    @classmethod
    def of(cls, fmt: str, sizes: dict[str, int], shapes: dict[str, list[int]], c: Comparison) -> "Check":
        return cls(**asdict(c), format=fmt, sizes=sizes, shapes=shapes)

    def as_dict(self) -> dict[str, Any]:
        """The row in parity.json: what was compared first, then how it went."""
        data = asdict(self)
        head = {k: data.pop(k) for k in ("format", "sizes", "shapes")}
        return {**head, **data}


@dataclass
class ParityReport:
    passed: bool
    checks: list[Check]
    atol: float
    rtol: float
    declared_shapes: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    compile_speedup: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    divergence: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: dict[str, str] = field(default_factory=dict)  # per format: torch's and the exporters' own
    trained: bool = True
    failures: list[Any] = field(default_factory=list, repr=False)  # the ExportErrors, for located messages

    def as_dict(self) -> dict[str, Any]:
        """parity.json: everything but the exceptions themselves (their text is in `errors`)."""
        data = asdict(replace(self, failures=[], checks=[]))
        data.pop("failures")
        data["checks"] = [c.as_dict() for c in self.checks]
        return data


def verdict(checks: list[Check], declared: list[dict[str, Any]], errors: list[Any]) -> bool:
    """Honest: at least one check, every check passed (values and metrics), every declared-shape
    check passed, and no format failed to be produced."""
    return bool(checks) and all(c.passed for c in checks) and all(d["passed"] for d in declared) and not errors


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
    same = (torch.isnan(r) & torch.isnan(g)) | (g == r)  # NaN where eager is NaN, or the same infinity
    diff = torch.nan_to_num(torch.where(same, torch.zeros_like(r), (g - r).abs()), nan=float("inf"),
                            posinf=float("inf"))
    allowed = torch.where(torch.isfinite(r), atol + rtol * r.abs(), torch.zeros_like(r))  # no slack around an infinity
    return Tolerance(diff, allowed, float(diff.max()) if diff.numel() else 0.0, int((diff > allowed).sum()))


def _failed(error: str, worst: dict | None = None) -> Comparison:
    return Comparison(float("inf"), float("inf"), 1.0, worst or {}, 0, 0, False, error)


def compare(names: list[str], ref: list[torch.Tensor], got: list[torch.Tensor], atol: float,
            rtol: float) -> Comparison:
    """Outputs `got` against `ref`, element by element, with the worst element found."""
    if len(ref) != len(got):
        return _failed(f"{len(got)} outputs, expected {len(ref)}")
    max_abs = max_rel = 0.0
    bad = total = nan = inf = 0
    worst: dict[str, Any] = {}
    worst_excess = -1.0
    for name, r, g in zip(names, ref, got):
        r, g = r.detach().double().cpu(), g.detach().double().cpu()
        if r.shape != g.shape:
            return _failed(f"output '{name}' has shape {tuple(g.shape)}, expected {tuple(r.shape)}", {"output": name})
        nan += int(torch.isnan(g).sum())
        inf += int(torch.isinf(g).sum())
        t = tolerance(r, g, atol, rtol)
        bad += t.bad
        total += r.numel()
        if not r.numel():
            continue
        max_abs = max(max_abs, t.max_abs)
        rel = t.diff / r.abs().clamp_min(1e-12)
        max_rel = max(max_rel, float(torch.nan_to_num(rel, nan=0.0).max()))
        excess = (t.diff - t.allowed).flatten()
        i = int(excess.argmax())
        if float(excess[i]) > worst_excess:
            worst_excess = float(excess[i])
            idx = list(torch.unravel_index(torch.tensor(i), r.shape)) if r.dim() else []
            worst = {"output": name, "index": [int(v) for v in idx], "got": float(g.flatten()[i]),
                     "ref": float(r.flatten()[i])}
    return Comparison(max_abs, max_rel, bad / total if total else 0.0, worst, nan, inf, bad == 0)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """The eager reference on one thread. The sweep's sizes are small, and on a busy machine torch's
    OpenMP barriers stall: YOLOv8n's 8-size sweep took 11 s on two threads, 0.5 s on one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def run_checks(job: Any, runners: Mapping[str, Runner], grid: list[dict[str, int]]) -> list[Check]:
    """Every runner against the job's eager module at every size of the grid."""
    cfg, names = job.config, list(job.inputs)
    checks = []
    job.module.train(False)  # eval mode
    with torch.no_grad(), _one_thread():
        for sizes in grid:
            xs = make_inputs(job.inputs, sizes, cfg.seed)
            shapes = {n: list(x.shape) for n, x in zip(names, xs)}
            ref = flatten(job.module(*xs))
            for fmt, run in runners.items():
                try:
                    got = flatten(run([x.clone() for x in xs]))
                except Exception as e:
                    checks.append(Check.of(fmt, sizes, shapes, _failed(root_cause(e))))
                    continue
                checks.append(Check.of(fmt, sizes, shapes, compare(job.output_names, ref, got, cfg.atol, cfg.rtol)))
    return checks


def time_calls(run: Callable[[], Any], rounds: int = 30) -> float:
    """Median ms per call, after three warm-up calls."""
    for _ in range(3):
        run()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 4)


def label(sizes: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sizes.items()) or "fixed"


def latency(inputs: Mapping[str, InputDecl], runners: Mapping[str, Runner], sizes_list: list[dict[str, int]],
            rounds: int = 30) -> dict[str, dict[str, float]]:
    """Median ms per call for each runner at each size. Each runner is timed in its own block:
    torch's OpenMP threads keep spinning after an eager call and would slow an onnxruntime call
    interleaved right after it."""
    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for sizes in sizes_list:
            xs = make_inputs(inputs, sizes, 0)
            for name, run in runners.items():
                out.setdefault(name, {})[label(sizes)] = time_calls(lambda: run(xs), rounds)
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
