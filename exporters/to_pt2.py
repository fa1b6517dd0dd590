"""torch.export: a `.pt2` with dynamic shapes from the spec's symbolic dims, saved and reloaded.

GRU and LSTM are exported through torch's while-loop decompositions, so their time axis stays
dynamic (as torch.onnx does for its own capture).
"""
from __future__ import annotations

import contextlib
import re
import time
from typing import Any, Callable, Iterator

import torch

from . import blame, rewrite
from .artifact import Artifact, staged
from .capture import capture
from .declared import pt2_shapes
from .errors import ExportError, raise_if_io
from .inputs import torch_dynamic_shapes
from .job import ExportJob

_RECURRENT = ("RNN",)  # GRU and LSTM keep time dynamic as while loops


@contextlib.contextmanager
def _dynamic_rnns() -> Iterator[None]:
    """GRU and LSTM as while loops, which keep the time axis symbolic (as torch.onnx does)."""
    try:
        from torch.export._patches import register_gru_while_loop_decomposition, register_lstm_while_loop_decomposition
    except ImportError:  # an older torch: recurrent time axes get pinned, and are refused below
        yield
        return
    ops = [torch.ops.aten.lstm.input, torch.ops.aten.gru.input]
    _forget(ops)  # an op caches its python kernel: a registration made and undone earlier can hide this one
    try:
        with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition():
            _forget(ops)
            yield
    finally:
        _forget(ops)


def _forget(ops: list[Any]) -> None:
    for op in ops:
        cache = getattr(op, "_dispatch_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def _capture(module: torch.nn.Module, job: ExportJob, oblivious: bool = False) -> Any:
    """torch.export with RNNs as while loops; `oblivious`: with size-oblivious guards, as torch.onnx
    exports, so that a size that could be 1 somewhere in the model (a ResNet's last feature map) does
    not narrow the dim's range. The parity sweep runs the program at every checked size."""
    with _dynamic_rnns(), _size_oblivious() if oblivious else contextlib.nullcontext():
        return torch.export.export(module, tuple(job.example), dynamic_shapes=torch_dynamic_shapes(job.inputs, job.dims))


def _size_oblivious() -> Any:
    try:
        return torch.fx.experimental._config.patch(backed_size_oblivious=True)
    except (AttributeError, KeyError):  # an older torch
        return contextlib.nullcontext()


def program(job: ExportJob) -> Any:
    """The job's `torch.export` program, captured once (an ExportError if it cannot be), and the
    notes of the rewrites it needed."""
    if "program" not in job.cache:
        module, notes = rewrite.for_format("pt2", job.module, job.example)
        job.cache["pt2_notes"] = notes
        try:
            job.cache["program"] = _capture(module, job)
        except Exception as e:
            raise_if_io(e, job.path("pt2"))
            job.cache["program"] = _retry(e, job, module, notes)
    got = job.cache["program"]
    if isinstance(got, ExportError):
        raise got
    return got


def _retry(e: BaseException, job: ExportJob, module: Any, notes: list[str]) -> Any:
    """A range guard such as `height//32 != 1` fails the plain capture: size-oblivious guards avoid it."""
    if "Constraints violated" in str(e) and "satisfy the generated guard" in str(e):
        try:
            program = _capture(module, job, oblivious=True)
        except Exception:
            return _refusal(e, job, module)
        notes.append("exported with size-oblivious guards (a size that may be 1 inside the model would narrow "
                     "the dims' range)")
        return program
    return _refusal(e, job, module)


def _refusal(e: BaseException, job: ExportJob, module: Any) -> ExportError:
    """Why torch.export failed, at the spec node that made it fail."""
    m = re.search(r"Constraints violated \(([^)]+)\)", str(e))
    if not m:
        node = blame.culprit(e, module)
        return ExportError("pt2", f"torch.export failed: {blame.root_cause(e)}{blame.where(node)}",
                           "export onnx or torchscript instead", node.meta.get("specc_loc") if node is not None else None)
    dims = [_symbol(d.strip(), job) for d in m.group(1).split(",")]
    node = _recurrent(job, dims) or _first_pinning(module, job)
    if node is None:
        name = next((n for n, i in job.inputs.items() if dims[0] in i.shape), next(iter(job.inputs)))
        return ExportError("pt2", f"torch.export cannot keep dim '{dims[0]}' dynamic: the model specializes it "
                           "to the example size", "give the dim a fixed size, or export onnx or torchscript",
                           job.inputs[name].loc)
    op = type(module.get_submodule(node.target)).__name__ if node.op == "call_module" else \
        getattr(node.target, "__name__", str(node.target))
    hint = ("torch.export keeps time dynamic through GRU and LSTM, not RNN; " if op == "RNN" else "") + \
        "export onnx or torchscript for a dynamic dim here, or give it a fixed size"
    return ExportError("pt2", f"torch.export cannot keep dim '{dims[0]}' dynamic: {op} '{node.meta['specc_path']}' "
                       "specializes it to the example size", hint, node.meta.get("specc_loc"))


def _symbol(name: str, job: ExportJob) -> str:
    """The spec's dim behind a torch.export Dim name (`4*time_over_4` is `time`)."""
    return next((s for s in job.dims if re.fullmatch(rf"(\d+\*)?{re.escape(s)}(_over_\d+)?", name)), name)


def _first_pinning(module: Any, job: ExportJob) -> Any:
    """The first spec node whose graph prefix torch.export cannot keep dynamic (a bisection of
    prefix exports, each returning every value so far)."""
    nodes = [n for n in module.graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    lo, hi = 0, len(nodes) - 1  # the prefix up to `hi` fails
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            _capture(_prefix(module, nodes[mid]), job)
            lo = mid + 1
        except Exception:
            hi = mid
    found = nodes[lo] if nodes else None
    while found is not None and not found.meta.get("specc_path"):  # a getitem: its producer
        found = found.args[0] if found.args and isinstance(found.args[0], torch.fx.Node) else None
    return found


def _prefix(module: Any, last: torch.fx.Node) -> torch.fx.GraphModule:
    g = torch.fx.Graph()
    env: dict = {}
    for n in module.graph.nodes:
        env[n] = g.node_copy(n, lambda a: env[a])
        if n is last:
            break
    g.output(tuple(v for n, v in env.items() if n.op not in ("placeholder", "get_attr")))
    return torch.fx.GraphModule(module, g)


def _recurrent(job: ExportJob, dims: list[str]) -> Any:
    """The first recurrent node whose input carries one of these dims: what torch.export specializes."""
    for node in job.module.graph.nodes:
        if node.op != "call_module" or type(job.module.get_submodule(node.target)).__name__ not in _RECURRENT:
            continue
        shape = job.shape_of(node.args[0] if node.args else None)
        if any(d in dims for d in shape if isinstance(d, str)) and node.meta.get("specc_path"):
            return node
    return None


def export(job: ExportJob) -> Artifact:
    start = time.perf_counter()
    path = job.path("pt2")
    with capture() as cap:
        prog = program(job)
        declared = pt2_shapes(prog, job)
        with staged(path) as tmp:
            torch.export.save(prog, str(tmp))
    art = Artifact("pt2", path, time.perf_counter() - start, job.cache.get("pt2_notes", []), cap.summary(),
                   "torch.export")
    art.declared = declared
    return art


def load_program(path: Any) -> Any:
    with capture():
        return torch.export.load(str(path))


def load(path: Any) -> Callable[[list[torch.Tensor]], Any]:
    module = load_program(path).module()
    return lambda xs: module(*xs)
