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

from . import blame
from .artifact import Artifact, staged
from .capture import capture
from .declared import pt2_shapes
from .errors import ExportError, raise_if_io
from .inputs import torch_dynamic_shapes
from .job import ExportJob

_RECURRENT = ("GRU", "LSTM", "RNN")


@contextlib.contextmanager
def _dynamic_rnns() -> Iterator[None]:
    """GRU and LSTM as while loops, which keep the time axis symbolic (as torch.onnx does)."""
    try:
        from torch.export._patches import register_gru_while_loop_decomposition, register_lstm_while_loop_decomposition
    except ImportError:  # an older torch: recurrent time axes get pinned, and are refused below
        yield
        return
    with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition():
        yield


def program(job: ExportJob) -> Any:
    """The job's `torch.export` program, captured once (an ExportError if it cannot be)."""
    if "program" not in job.cache:
        try:
            with _dynamic_rnns():
                job.cache["program"] = torch.export.export(job.module, tuple(job.example),
                                                           dynamic_shapes=torch_dynamic_shapes(job.inputs, job.dims))
        except Exception as e:
            raise_if_io(e, job.path("pt2"))
            job.cache["program"] = _refusal(e, job)
    got = job.cache["program"]
    if isinstance(got, ExportError):
        raise got
    return got


def _refusal(e: BaseException, job: ExportJob) -> ExportError:
    m = re.search(r"Constraints violated \(([\w, ]+)\)", str(e))
    if m:
        dims = [d.strip() for d in m.group(1).split(",")]
        node = _pinning_node(job, dims)
        if node is None:
            name = next((n for n, i in job.inputs.items() if dims[0] in i.shape), next(iter(job.inputs)))
            return ExportError("pt2", f"torch.export cannot keep dim '{dims[0]}' dynamic: the model specializes it "
                               "to the example size", "give the dim a fixed size, or export onnx or torchscript",
                               job.inputs[name].loc)
        op = type(job.module.get_submodule(node.target)).__name__
        return ExportError("pt2", f"torch.export cannot keep dim '{dims[0]}' dynamic: {op} "
                           f"'{node.meta['specc_path']}' unrolls it to the example size",
                           "torch.export keeps time dynamic through GRU and LSTM, not RNN; export onnx or "
                           "torchscript for a dynamic time axis, or give the dim a fixed size", node.meta.get("specc_loc"))
    node = blame.culprit(e, job.module)
    return ExportError("pt2", f"torch.export failed: {blame.root_cause(e)}{blame.where(node)}",
                       "export onnx or torchscript instead", node.meta.get("specc_loc") if node is not None else None)


def _pinning_node(job: ExportJob, dims: list[str]) -> Any:
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
    art = Artifact("pt2", path, time.perf_counter() - start, [], cap.summary(), "torch.export")
    art.declared = declared
    return art


def load_program(path: Any) -> Any:
    with capture():
        return torch.export.load(str(path))


def load(path: Any) -> Callable[[list[torch.Tensor]], Any]:
    module = load_program(path).module()
    return lambda xs: module(*xs)
