"""Constant folding: values computed once, when the module is built, from the spec alone.

A node is a build-time constant when nothing the inputs carry and nothing a checkpoint loads can
change it (RoPE's inverse frequencies and its cos/sin tables are the examples):
- a `Buffer` with `persistent: false` (its init is in the spec, and no state_dict holds it);
- a function node whose inputs are all constants (none at all: `arange` up to a number, `full` of a
  fixed shape), whose size arguments name no dim, and that returns one tensor.

Constants are computed in graph order when the module is built. Those that a run-time node (or an
output) reads are kept as non-persistent buffers at the node's path, so they follow `.to(device)`
but stay out of the state_dict (a Hugging Face checkpoint still loads strictly); the others were
only steps towards them and are dropped. A persistent buffer is never folded: loading weights may
change it after the build.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import dimexpr
from .graph import GNode, Graph, Scope

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from .shapes import TypedGraph


@dataclass(frozen=True)
class Plan:
    constant: frozenset[str]  # paths of the nodes computed at build
    stored: frozenset[str]  # the constants kept as non-persistent buffers (run-time nodes read them)

    def skipped(self, path: str) -> bool:
        """A constant that the forward never reads: no code is emitted for it."""
        return path in self.constant and path not in self.stored


def plan(graph: Graph) -> Plan:
    """Which nodes are constants, and which of them are stored."""
    homes = _scope_paths(graph.root) if graph.root is not None else {""}
    constant: set[str] = set()
    for node in graph.nodes:
        if _is_constant(node, constant, homes):
            constant.add(node.path)
    read = {v.node for n in graph.nodes if n.path not in constant for v in n.given}
    read |= {v.node for _, v in graph.outputs}
    return Plan(frozenset(constant), frozenset(p for p in constant if p in read))


def _is_constant(node: GNode, constant: set[str], homes: set[str]) -> bool:
    op = node.op
    if op.name == "Buffer":
        return node.args.get("persistent", True) is False
    if op.kind != "function" or node.n_outputs != 1 or node.path.rpartition(".")[0] not in homes:
        return False  # a repeated function node's copies have no module of their own to live in
    if any(v.node not in constant for v in node.given):
        return False
    return not any(dimexpr.symbols_in(node.args.get(k)) for k in op.sizes)


def _scope_paths(scope: Scope) -> set[str]:
    """The module path of every scope (the top level is '')."""
    paths = {scope.path.rstrip(".")}
    for item in scope.items:
        for sub in item.scopes:
            paths |= _scope_paths(sub)
    return paths


class _BuildEmitter:
    """The build-time backend of `calls.Emitter`: real tensors on the CPU, no symbolic dims."""

    def size(self, x: Any, dim: int) -> int:
        return int(x.shape[dim])

    def attr(self, x: Any, name: str) -> Any:
        return getattr(x, name)

    def dim(self, symbol: str) -> Any:
        raise AssertionError(f"a constant names dim {symbol}")  # `plan` keeps such nodes at run time

    def arith(self, op: str, a: int, b: int) -> int:
        return dimexpr.compute(op, a, b)

    def dtype(self, name: str) -> Any:
        from .shapes import DTYPES
        return DTYPES[name]

    def device(self) -> None:
        return None

    def call(self, call: Any) -> Any:
        from .shapes import run_call
        return run_call(call, None, None)


def fold(typed: "TypedGraph", root: "nn.Module", the_plan: Plan) -> None:
    """Compute the constants in graph order and register the stored ones on `root` (non-persistent)."""
    import torch
    _guard(typed, the_plan)
    values: dict[str, Any] = {}
    with torch.no_grad():
        for node in typed.graph.nodes:
            if node.path not in the_plan.constant:
                continue
            if node.op.kind == "tensor":
                values[node.path] = root.get_buffer(node.path)
                continue
            xs = [None if v is None else values[v.node] if v.index is None else values[v.node][v.index]
                  for v in node.inputs]
            values[node.path] = _compute(node, xs)
    for path in the_plan.stored:
        if typed.graph.node(path).op.kind != "tensor":
            owner, leaf = owner_of(root, path)
            owner.register_buffer(leaf, values[path].clone(), persistent=False)


def _compute(node: GNode, xs: list) -> Any:
    """One constant on real tensors; what meta tensors cannot see (an index out of range) is located."""
    from .errors import SpecError, first_line
    from .shapes import run_call
    try:
        return run_call(node.op.bind(_BuildEmitter(), xs, node.args, node.op), None, None)
    except Exception as e:  # noqa: BLE001 - torch reports bad values in many ways
        raise SpecError.at(node.loc, f"cannot compute {node.op.name} '{node.path}' at build: {first_line(e)}",
                           "its inputs are constants of the spec: check their values") from None


def owner_of(root: "nn.Module", path: str) -> tuple["nn.Module", str]:
    """The module that holds `path`'s last part, created as empty containers where needed."""
    import torch.nn as nn
    *parents, leaf = path.split(".")
    owner = root
    for p in parents:
        child = owner._modules.get(p)
        if child is None:
            child = nn.Module()
            owner.add_module(p, child)
        owner = child
    return owner, leaf


def _guard(typed: "TypedGraph", the_plan: Plan) -> None:
    """Refuse constants too big to compute, before any is: 8 bytes per element bounds every dtype."""
    from math import prod

    from .errors import SpecError
    from .shapes import human_bytes, memory_limit
    sizes = {p: 8 * prod(typed.info[p].shape) for p in the_plan.constant if typed.graph.node(p).op.kind != "tensor"}
    if not sizes or sum(sizes.values()) <= memory_limit():
        return
    biggest = max(sizes, key=sizes.__getitem__)
    raise SpecError.at(typed.graph.node(biggest).loc, f"the values computed at build need up to "
                       f"{human_bytes(sum(sizes.values()))}, more than the {human_bytes(memory_limit())} allowed",
                       "make the constant tables smaller, or raise SPECC_MAX_PARAM_BYTES")
