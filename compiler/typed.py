"""The typed graph and the values shape inference passes around: node infos, rendered shapes,
where a symbolic dim's run-time size comes from, the shape error, and how a bound call runs on real
or meta values. `shapes` (the pass) and `infer` (one node) both read this module; neither imports
the other at run time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .calls import Call
from .graph import GNode, Graph, Val
from .sampling import Sampler, invert
from .spec import DimDecl
from .targets import resolve as target_of

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}

Dim = Any  # int or a symbolic string such as "batch" or "16*batch"


@dataclass
class NodeInfo:
    shape: Any  # a tuple of dims, or a tuple of shapes for tuple outputs
    params: int = 0  # tied parameters are counted once, at the node that owns them
    trainable: int = 0
    bytes: int = 0  # parameters and buffers
    args: dict[str, Any] = field(default_factory=dict)  # with inferred sizes filled in
    inits: dict[str, Any] = field(default_factory=dict)  # the module's init: for the parameters it has


@dataclass
class TypedGraph:
    graph: Graph
    info: dict[str, NodeInfo]  # by node path and input name
    symbols: list[str]
    dims: dict[str, DimDecl] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(i.params for i in self.info.values())

    @property
    def trainable(self) -> int:
        return sum(i.trainable for i in self.info.values())

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.info.values())

    def shape_of(self, v: Val) -> Any:
        return value_shape(self.info, v)

    def dim_source(self, node: GNode, symbol: str) -> tuple[Val, int, tuple[str, int]] | None:
        """Where a symbolic size named in `node`'s arguments is read at run time: a dim of the node's
        inputs, else of its block's inputs (the same rule for lowering and eject)."""
        return dim_source(node, symbol, self.shape_of)


def value_shape(info: dict[str, NodeInfo], v: Val) -> Any:
    """The shape of a value: its node's, or one element's of a tuple output."""
    s = info[v.node].shape
    return s if v.index is None else s[v.index]


def dim_source(node: GNode, symbol: str, shape_of: Any) -> tuple[Val, int, tuple[str, int]] | None:
    best = None
    for v in node.given + [v for v in node.scope_inputs if v not in node.given]:
        shape = shape_of(v)
        if not isinstance(shape, tuple) or (shape and isinstance(shape[0], tuple)):
            continue
        for axis, d in enumerate(shape):
            how = invert(d, symbol)
            if how is not None and (best is None or how == ("", 1) and best[2] != ("", 1)):
                best = (v, axis, how)
                if how == ("", 1):
                    return best
    return best


def fmt_shape(shape: Any) -> str:
    """`(batch, 16, 64)`; tuple outputs as `(batch, 16, 64), (1, batch, 64)`."""
    if shape is None:
        return "None"
    if isinstance(shape, tuple) and shape and (isinstance(shape[0], tuple) or shape[0] is None):
        return ", ".join(fmt_shape(s) for s in shape)
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def render_shape(a: Any, b: Any, s: Sampler) -> Any:
    if isinstance(a, torch.Tensor):
        return tuple(s.render(int(x), int(y)) for x, y in zip(a.shape, b.shape))
    if isinstance(a, (tuple, list)):
        return tuple(render_shape(x, y, s) for x, y in zip(a, b))
    return None


class ShapeError(Exception):
    def __init__(self, message: str, hint: str = "", loc: Any = None):
        super().__init__(message)
        self.message, self.hint, self.loc = message, hint, loc
        self.only_b = False  # the failure showed in run B only: its sizes cannot be paired


def run_call(call: Call, module: Any, tensor: Any) -> Any:
    """Execute a bound call on real or meta values (the shape backend's half of `calls`)."""
    if call.kind == "module":
        return module(*call.args, **call.kwargs)
    if call.kind == "tensor":
        return tensor
    if call.kind == "getitem":
        return call.args[0][call.args[1]]
    if call.kind == "method":
        return getattr(call.args[0], call.target)(*call.args[1:], **call.kwargs)
    return target_of(call.target)(*call.args, **call.kwargs)
