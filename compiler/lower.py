"""Lower a typed graph to a `torch.fx.GraphModule` with real weights.

Submodules live at their spec paths (`layers.2.attn.q`), so state_dict keys follow the spec's
node names and block nesting. The generated `forward` is straight-line code: no interpreter
runs at call time, and `print(model.code)` reads like the spec.
"""
from __future__ import annotations

import operator
import re
from typing import Any

import torch.fx as fx
import torch.nn as nn

from .resolve import GNode, Val
from .shapes import TypedGraph

_UNSAFE = re.compile(r"[^0-9A-Za-z_]")


def class_name(spec_name: str) -> str:
    """`seed-transformer-encoder` -> `SeedTransformerEncoder`."""
    parts = [p for p in re.split(r"[-_]+", spec_name) if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return name if name[0].isalpha() else "M" + name


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    *parents, leaf = path.split(".")
    owner = root
    for p in parents:
        child = owner._modules.get(p)
        if child is None:
            child = nn.Module()
            owner.add_module(p, child)
        owner = child
    owner.add_module(leaf, module)


def build_modules(typed: TypedGraph) -> nn.Module:
    """Instantiate every module op on the CPU in graph order (so a seed fixes every weight)."""
    root = nn.Module()
    for node in typed.graph.nodes:
        if node.op.kind == "module":
            args = typed.info[node.path].args
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
            _set_module(root, node.path, node.op.target(**kwargs))
    return root


def lower(typed: TypedGraph, root: nn.Module | None = None) -> fx.GraphModule:
    """Emit the fx graph, wrap it with the modules in a GraphModule, and lint it."""
    graph = typed.graph
    root = root if root is not None else build_modules(typed)
    g = fx.Graph()
    values: dict[str, fx.Node] = {}
    for name in graph.inputs:
        values[name] = g.placeholder(name)
    items: dict[tuple[str, int], fx.Node] = {}

    def get(v: Val) -> fx.Node:
        base = values[v.node]
        if v.index is None:
            return base
        key = (v.node, v.index)
        if key not in items:
            items[key] = g.create_node("call_function", operator.getitem, (base, v.index),
                                       name=f"{base.name}_{v.index}")
        return items[key]

    for node in graph.nodes:
        xs = [get(v) for v in node.inputs]
        fx_node = _emit(g, node, xs, typed, values)
        fx_node.meta["specc_path"] = node.path
        fx_node.meta["specc_loc"] = str(node.loc)
        values[node.path] = fx_node
    outs = [get(v) for _, v in graph.outputs]
    g.output(outs[0] if len(outs) == 1 else tuple(outs))
    gm = fx.GraphModule(root, g, class_name=class_name(graph.name))
    gm.graph.lint()
    gm.specc_output_names = [n for n, _ in graph.outputs]
    return gm


def _emit(g: fx.Graph, node: GNode, xs: list[fx.Node], typed: TypedGraph, values: dict) -> fx.Node:
    name = _UNSAFE.sub("_", node.path)
    op = node.op
    if op.kind == "module":
        if op.name == "MultiheadAttention" and len(xs) == 1:
            xs = [xs[0], xs[0], xs[0]]
        return g.create_node("call_module", node.path, tuple(xs), name=name)
    kwargs: dict[str, Any] = dict(node.args)
    if op.name == "reshape":
        kwargs["shape"] = _reshape_dims(g, node, xs[0], typed, values)
    if "other" in kwargs:
        return g.create_node("call_function", op.target, (xs[0], kwargs.pop("other")), kwargs, name=name)
    if op.name in ("cat", "stack"):
        return g.create_node("call_function", op.target, (list(xs),), kwargs, name=name)
    return g.create_node("call_function", op.target, tuple(xs), kwargs, name=name)


def _reshape_dims(g: fx.Graph, node: GNode, x: fx.Node, typed: TypedGraph, values: dict) -> list:
    """A symbolic name in a reshape becomes `.size(i)` of the reshaped tensor if it carries the
    dim, else of the graph input that declares it."""
    in_shape = list(typed.shape_of(node.inputs[0]))
    dims: list[Any] = []
    for d in node.args["shape"]:
        if not isinstance(d, str):
            dims.append(d)
        elif d in in_shape:
            dims.append(g.call_method("size", (x, in_shape.index(d))))
        else:  # shapes checked that some input declares it
            name, inp = next((n, i) for n, i in typed.graph.inputs.items() if d in i.shape)
            dims.append(g.call_method("size", (values[name], list(inp.shape).index(d))))
    return dims
