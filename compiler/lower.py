"""Lower a typed graph to a `torch.fx.GraphModule` with real weights.

Submodules live at their spec paths (`layers.2.attn.q`), so state_dict keys follow the spec's
node names and nesting. Each node is emitted through its op's calling convention (`calls`), the
one shape inference ran. The generated `forward` is straight-line code: no interpreter runs at
call time, and `print(model.code)` reads like the spec.
"""
from __future__ import annotations

import contextlib
import operator
import re
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from . import dimexpr, fold, inits
from .calls import Call
from .fold import owner_of
from .graph import GNode, Val
from .shapes import DTYPES, TypedGraph, dim_source
from .targets import resolve

_UNSAFE = re.compile(r"[^0-9A-Za-z_]")
_ARITH = {"//": operator.floordiv, "-": operator.sub, "+": operator.add, "*": operator.mul}


def class_name(spec_name: str) -> str:
    """`seed-transformer-encoder` -> `SeedTransformerEncoder`."""
    parts = [p for p in re.split(r"[-_]+", spec_name) if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return name if name[0].isalpha() else "M" + name


def make_tensor(args: dict[str, Any]) -> torch.Tensor:
    """The initial value of a Parameter or Buffer node."""
    t = torch.empty(*args["shape"], dtype=DTYPES[args.get("dtype", "float32")])
    return inits.apply(t, args.get("init", "zeros"))


def build_modules(typed: TypedGraph, empty: bool = False) -> nn.Module:
    """Instantiate every module and tensor on the CPU in graph order (so a seed fixes every weight),
    then tie the shared parameters. `empty` puts modules and Parameter nodes on the meta device, with
    no memory and no initial values, for weights that a file will provide (`load_state_dict(assign=True)`);
    Buffer nodes stay real, since a non-persistent one is in no file."""
    root = nn.Module()
    where = torch.device("meta") if empty else contextlib.nullcontext()
    for node in typed.graph.nodes:
        args = typed.info[node.path].args
        owner, leaf = (None, "") if node.op.kind == "function" else owner_of(root, node.path)
        if node.op.kind == "module":
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in node.op.ctor_args(args).items()}
            with where:
                module = resolve(node.op.target)(**kwargs)
            for param, init in typed.info[node.path].inits.items() if not empty else ():
                inits.apply(getattr(module, param), init)
            owner.add_module(leaf, module)
        elif node.op.name == "Parameter":
            t = torch.empty(*args["shape"], dtype=DTYPES[args.get("dtype", "float32")], device="meta") if empty \
                else make_tensor(args)
            owner.register_parameter(leaf, nn.Parameter(t, requires_grad=args.get("requires_grad", True)))
        elif node.op.kind == "tensor":
            owner.register_buffer(leaf, make_tensor(args), persistent=args.get("persistent", True))
        if not node.trainable and owner is not None:  # a tied parameter, set below, follows its owner
            getattr(owner, leaf).requires_grad_(False)
    for node in typed.graph.nodes:
        for tie in node.ties:
            setattr(root.get_submodule(node.path), tie.param, root.get_parameter(tie.key))
    return root


def origin(typed: TypedGraph, node: GNode) -> Val | None:
    """The value whose device a tensor made by `node` takes: its first input, else the value its
    first named dim is read from, else its block's first input (None: nothing to follow)."""
    if node.given:
        return node.given[0]
    for k in node.op.sizes:
        for symbol in dimexpr.symbols_in(node.args.get(k)):
            source = dim_source(node, symbol, typed.shape_of)
            if source is not None:
                return source[0]
    return node.scope_inputs[0] if node.scope_inputs else None


class _FxEmitter:
    """The lowering backend of `calls.Emitter`: every request becomes an fx node."""

    def __init__(self, g: fx.Graph, typed: TypedGraph, node: GNode, get: Any):
        self.g, self.typed, self.node, self.get = g, typed, node, get

    def size(self, x: fx.Node, dim: int) -> fx.Node:
        return self.g.call_method("size", (x, dim))

    def attr(self, x: fx.Node, name: str) -> fx.Node:
        return self.g.call_function(getattr, (x, name))

    def dim(self, symbol: str) -> fx.Node:
        source = self.typed.dim_source(self.node, symbol)
        assert source is not None, (self.node.path, symbol)  # shape inference checked it
        v, axis, (op, k) = source
        size = self.size(self.get(v), axis)
        return size if not op else self.g.call_function(_ARITH[op], (size, k))

    def arith(self, op: str, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int):
            return dimexpr.compute(op, a, b)
        return self.g.call_function(_ARITH[op], (a, b))

    def dtype(self, name: str) -> torch.dtype:
        return DTYPES[name]

    def device(self) -> fx.Node | None:
        x = origin(self.typed, self.node)
        return None if x is None else self.attr(self.get(x), "device")

    def call(self, call: Call) -> fx.Node:
        return emit(self.g, call, self.node.path, None)


def _fx_name(path: str) -> str:
    """The generated code's variable for a node: its path made an identifier, and never `self`
    (forward's own), which torch.fx does not rename by itself."""
    name = _UNSAFE.sub("_", path)
    return name + "_" if name == "self" else name


def emit(g: fx.Graph, call: Call, path: str, name: str | None) -> fx.Node:
    if call.kind == "module":
        return g.create_node("call_module", path, call.args, call.kwargs, name=name)
    if call.kind == "tensor":
        return g.create_node("get_attr", path, name=name)
    if call.kind == "method":
        return g.create_node("call_method", call.target, call.args, call.kwargs, name=name)
    target = operator.getitem if call.kind == "getitem" else resolve(call.target)
    return g.create_node("call_function", target, call.args, call.kwargs, name=name)


def lower(typed: TypedGraph, root: nn.Module | None = None) -> fx.GraphModule:
    """Emit the fx graph, wrap it with the modules in a GraphModule, and lint it."""
    graph = typed.graph
    root = root if root is not None else build_modules(typed)
    g = fx.Graph()
    values: dict[str, fx.Node] = {name: g.placeholder(name) for name in graph.inputs}
    items: dict[tuple[str, int], fx.Node] = {}

    def get(v: Val | None) -> Any:
        if v is None:
            return None
        base = values[v.node]
        if v.index is None:
            return base
        key = (v.node, v.index)
        if key not in items:
            items[key] = g.create_node("call_function", operator.getitem, (base, v.index),
                                       name=f"{base.name}_{v.index}")
        return items[key]

    folded = fold.plan(graph)
    if folded.stored:
        fold.fold(typed, root, folded)
    for node in graph.nodes:
        if folded.skipped(node.path):
            continue  # a step towards a constant: computed at build, never at run time
        call = Call("tensor") if node.path in folded.stored else \
            node.op.bind(_FxEmitter(g, typed, node, get), [get(v) for v in node.inputs], node.args, node.op)
        fx_node = emit(g, call, node.path, _fx_name(node.path))
        fx_node.meta["specc_path"] = node.path
        fx_node.meta["specc_loc"] = node.loc
        values[node.path] = fx_node
    outs = [get(v) for _, v in graph.outputs]
    g.output(outs[0] if len(outs) == 1 else tuple(outs))
    gm = fx.GraphModule(root, g, class_name=class_name(graph.name))
    for node in graph.nodes:  # GraphModule re-registers buffers as persistent: mark the others again
        if node.op.name == "Buffer" and not node.args.get("persistent", True) or node.path in folded.stored:
            owner, leaf = owner_of(gm, node.path)
            owner._non_persistent_buffers_set.add(leaf)
    gm.graph.lint()
    gm.specc_output_names = [n for n, _ in graph.outputs]
    return gm
