"""After a mismatch: compare intermediate outputs node by node and name the first diverging spec
node with its YAML line.

The reference is every fx node's eager output. The candidate values come from the artifact
itself: ONNX values that the exporter's provenance maps to spec nodes (run in onnxruntime with
graph optimizations off), TorchScript submodules fed the eager inputs of their node, and the
pt2 program's nodes mapped back through torch.export's provenance. Weights are compared too,
so a tampered weight is found even where no intermediate value is observable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.fx as fx

from . import blame, to_onnx, to_pt2, to_torchscript
from .parity import flatten, tolerance


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def eager_values(module: fx.GraphModule, xs: list[torch.Tensor]) -> dict[str, Any]:
    rec = _Recorder(module)
    with torch.no_grad():
        rec.run(*xs)
    return rec.values


def _close(ref: Any, got: Any, atol: float, rtol: float) -> tuple[bool, float]:
    try:
        r, g = flatten(ref), flatten(got)
    except TypeError:
        return True, 0.0
    worst = 0.0
    for a, b in zip(r, g):
        if a.shape != b.shape:
            return False, float("inf")
        t = tolerance(a, b, atol, rtol)
        worst = max(worst, t.max_abs)
        if t.bad:
            return False, worst
    return True, worst


def _nodes(module: fx.GraphModule) -> list[fx.Node]:
    return [n for n in module.graph.nodes if n.meta.get("specc_path")]


def _report(node: fx.Node, how: str, err: float) -> dict[str, Any]:
    loc = node.meta.get("specc_loc")  # a compiler.errors.Loc
    op = node.target if node.op == "call_module" else getattr(node.target, "__name__", str(node.target))
    return {"node": node.meta["specc_path"], "op": op, "location": str(loc) if loc else "",
            "file": loc.file if loc else "", "line": loc.line if loc else 0, "how": how, "max_abs_err": err}


def _weights(module: fx.GraphModule, state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """The first node (in graph order) whose parameters or buffers differ from the artifact's."""
    own = module.state_dict()
    for node in _nodes(module):
        if node.op != "call_module":
            continue
        prefix = node.target + "."
        for key, value in own.items():
            if key.startswith(prefix) and key in state:
                other = state[key].detach().cpu()
                if other.shape != value.shape or not torch.equal(other.to(value.dtype), value):
                    err = float((other.double() - value.double()).abs().max()) if other.shape == value.shape else float("inf")
                    return _report(node, f"its weight '{key[len(prefix):]}' differs in the artifact", err)
    return None


def first_divergence(fmt: str, path: Path | None, module: fx.GraphModule, xs: list[torch.Tensor],
                     atol: float, rtol: float) -> dict[str, Any] | None:
    ref = eager_values(module, xs)
    candidates: dict[str, Any] = {}
    state: dict[str, torch.Tensor] = {}
    if fmt == "onnx" and path is not None:
        candidates = to_onnx.intermediates(path, xs)
        state = _onnx_weights(path)
    elif fmt == "torchscript" and path is not None:
        ts = to_torchscript.loaded_module(path)
        state = dict(ts.state_dict())
        candidates = _submodule_values(module, ts, ref)
    elif fmt == "pt2" and path is not None:
        program = to_pt2.load_program(path)
        state = dict(program.state_dict)
        candidates = _pt2_values(module, program, xs)
    for node in _nodes(module):
        got = candidates.get(node.meta["specc_path"])
        if got is None or node.name not in ref:
            continue
        ok, err = _close(ref[node.name], got, atol, rtol)
        if not ok:
            return _report(node, "its output is the first that differs", err)
    return _weights(module, state)


def _onnx_weights(path: Path) -> dict[str, torch.Tensor]:
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(path))
    return {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}


def _submodule_values(module: fx.GraphModule, ts: Any, ref: dict[str, Any]) -> dict[str, Any]:
    """Each TorchScript submodule run on the eager inputs of its node."""
    out = {}
    with torch.no_grad():
        for node in _nodes(module):
            if node.op != "call_module":
                continue
            sub = ts
            try:
                for part in node.target.split("."):
                    sub = getattr(sub, part)
                args = [ref[a.name] if isinstance(a, fx.Node) else a for a in node.args]
                out[node.meta["specc_path"]] = sub(*args)
            except Exception:
                continue
    return out


def _pt2_values(module: fx.GraphModule, program: Any, xs: list[torch.Tensor]) -> dict[str, Any]:
    """The pt2 program's own node values, mapped to spec nodes through torch.export's provenance."""
    path_of = {n.name: n.meta["specc_path"] for n in _nodes(module)}
    try:
        gm = program.module()
        rec = _Recorder(gm)
        with torch.no_grad():
            rec.run(*xs)
    except Exception:
        return {}
    out = {}
    for n in gm.graph.nodes:
        origin = blame.root(n)
        if origin in path_of and n.name in rec.values:
            out[path_of[origin]] = rec.values[n.name]
    return out
