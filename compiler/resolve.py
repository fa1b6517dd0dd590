"""Resolve a `Spec` into a flat graph: blocks inlined, `repeat` unrolled, arguments evaluated.

Every graph node gets its qualified path (`layers.2.attn.q`), which becomes its submodule
path and state_dict prefix, and keeps the YAML location of the node that produced it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from .check import evaluate
from .errors import Collector, Loc, SpecError
from .source import Node
from .ops import OpDef, registry
from .spec import BlockDecl, InputDecl, NodeDecl, Ref, Spec
from .types import conforms, describe, yaml_name

MAX_NODES = 20_000


@dataclass(frozen=True)
class Val:
    """A value in the graph: the output of `node` (a graph node path or an input name), or element `index`."""

    node: str
    index: int | None = None


Env = dict[str, Union[Val, list[Val], None]]  # None: the node failed; its dependents are skipped


@dataclass
class GNode:
    path: str
    op: OpDef
    args: dict[str, Any]
    inputs: list[Val]
    loc: Loc
    arg_locs: dict[str, Loc] = field(default_factory=dict)
    name_path: str = ""  # the chain of spec names, e.g. "layers.2 > attn > q"

    @property
    def n_outputs(self) -> int:
        return self.op.n_outputs(self.args)


@dataclass
class Item:
    """One spec node inside a scope: an op (one graph node per copy) or a block (one scope per copy)."""

    name: str
    kind: str  # "op" | "block"
    repeat: int  # 0: no repeat key
    inputs: list[Val]
    nodes: list[GNode] = field(default_factory=list)
    scopes: list["Scope"] = field(default_factory=list)
    output: Any = None  # Val, or a list of Vals for a multi-output block


@dataclass
class Scope:
    """A body of nodes: the spec's top level, or one instance of a block. Eject and the graph
    picture read the nesting from here; the flat `Graph.nodes` is what runs."""

    block: str | None  # None: the top level
    path: str
    input_names: list[str]
    inputs: list[Val]
    items: list[Item] = field(default_factory=list)
    outputs: list[Val] = field(default_factory=list)


@dataclass
class Graph:
    name: str
    inputs: dict[str, InputDecl]
    nodes: list[GNode]
    outputs: list[tuple[str, Val]]  # (output name, value)
    root: Scope | None = None

    def node(self, path: str) -> GNode:
        return self._index[path]

    def __post_init__(self) -> None:
        self._index = {n.path: n for n in self.nodes}


def resolve(spec: Spec) -> Graph:
    """Inline blocks and unroll repeats; collect every error of the pass."""
    r = _Resolver(spec)
    env: Env = {name: Val(name) for name in spec.inputs}
    root = Scope(None, "", list(spec.inputs), [Val(n) for n in spec.inputs])
    env = r.layers(spec.layers, env, tuple(spec.inputs), spec.params, "", root)
    outputs: list[tuple[str, Val]] = []
    if not r.c.diagnostics:
        if spec.outputs:
            for ref in spec.outputs:
                v = r.ref(ref, env, whole_ok=True)
                outputs.extend(_named(str(ref).replace(".", "_"), v, r))
        elif spec.layers:
            last = spec.layers[-1].name
            v = r.ref(Ref(last, None, spec.layers[-1].loc), env, whole_ok=True)
            outputs.extend(_named(last, v, r))
    r.raise_if_any()
    root.outputs = [v for _, v in outputs]
    return Graph(spec.name, dict(spec.inputs), r.nodes, outputs, root)


def _named(name: str, v: Any, r: "_Resolver") -> list[tuple[str, Val]]:
    if v is None:
        return []
    if isinstance(v, list):
        return [(f"{name}_{i}", x) for i, x in enumerate(v)]
    producer = r.by_path.get(v.node)
    if v.index is None and producer is not None and producer.n_outputs > 1:
        return [(f"{name}_{i}", Val(v.node, i)) for i in range(producer.n_outputs)]
    return [(name, v)]


class _Resolver:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.ops = registry()
        self.c = Collector()
        self.nodes: list[GNode] = []
        self.by_path: dict[str, GNode] = {}
        self.over_limit = False  # once the node limit is hit, expansion stops everywhere

    def raise_if_any(self) -> None:
        seen, unique = set(), []
        for d in self.c.diagnostics:  # a block instantiated N times reports its error once
            key = (d.file, d.line, d.col, d.message)
            if key not in seen:
                seen.add(key)
                unique.append(d)
        if unique:
            raise SpecError(unique)

    def origin(self, node: Node) -> str:
        """Where a `$param` value was written, when that was a --set override."""
        name = node.value[1:] if isinstance(node.value, str) and node.value.startswith("$") else None
        loc = self.spec.param_locs.get(name) if name else None
        if loc is not None and loc.file == "--set":
            return f"the value of '{name}' comes from --set {loc.src.text if loc.src else name}"
        return ""

    # --- refs -------------------------------------------------------------------------------

    def ref(self, ref: Ref, env: Env, whole_ok: bool = False) -> Val | list[Val] | None:
        v = env.get(ref.name)
        if v is None:
            return None  # already reported
        if isinstance(v, list):
            if ref.index is None:
                if whole_ok:
                    return v
                self.c.error(ref.loc, f"'{ref.name}' has {len(v)} outputs; pick one",
                             f"write {ref.name}.0 … {ref.name}.{len(v) - 1}")
                return None
            if ref.index >= len(v):
                self.c.error(ref.loc, f"'{ref.name}' has {len(v)} outputs; there is no {ref}",
                             f"use {ref.name}.0 … {ref.name}.{len(v) - 1}")
                return None
            return v[ref.index]
        producer = self.by_path.get(v.node)
        n = producer.n_outputs if producer is not None and v.index is None else 1
        if ref.index is None:
            if n > 1 and not whole_ok:
                self.c.error(ref.loc, f"{producer.op.name} '{ref.name}' returns {n} values; pick one",
                             f"write {ref.name}.0 (the output) or {ref.name}.1")
                return None
            return v
        if n == 1:
            self.c.error(ref.loc, f"'{ref.name}' has one output; there is no {ref}", f"write {ref.name}")
            return None
        if ref.index >= n:
            self.c.error(ref.loc, f"{producer.op.name} '{ref.name}' returns {n} values; there is no {ref}",
                         f"use {ref.name}.0 … {ref.name}.{n - 1}")
            return None
        return Val(v.node, ref.index)

    # --- layers -----------------------------------------------------------------------------

    def layers(self, decls: tuple[NodeDecl, ...], env: Env, inputs: tuple[str, ...], scope: dict[str, Any],
               prefix: str, into: Scope) -> Env:
        env = dict(env)
        prev = inputs[0] if inputs else None
        for decl in decls:
            refs = decl.refs if decl.refs is not None else (Ref(prev, None, decl.loc),)
            vals = [self.ref(r, env) for r in refs]
            prev = decl.name
            if any(v is None for v in vals):
                env[decl.name] = None
                continue
            repeat = self.repeat(decl, scope)
            if repeat is None:
                env[decl.name] = None
                continue
            path = prefix + decl.name
            item = Item(decl.name, "op" if decl.op is not None else "block", repeat, list(vals))
            if decl.op is not None:
                env[decl.name] = self.op_node(decl, vals, scope, path, repeat, item)
            else:
                env[decl.name] = self.block_node(decl, vals, scope, path, repeat, item)
            item.output = env[decl.name]
            if item.output is not None:
                into.items.append(item)
        return env

    def repeat(self, decl: NodeDecl, scope: dict) -> int | None:
        if decl.repeat is None:
            return 0  # 0: no repeat key, the node is not indexed
        try:
            n = evaluate(decl.repeat, scope)
        except SpecError as e:
            self.c.extend(e)
            return None
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            self.c.error(decl.repeat.loc, f"repeat must be a positive integer, got {n!r}",
                         self.origin(decl.repeat) or "write repeat: 4")
            return None
        if n + len(self.nodes) > MAX_NODES:
            self.c.error(decl.repeat.loc, f"repeat: {n} would make more than {MAX_NODES} nodes",
                         "a spec graph is unrolled; use a smaller repeat")
            return None
        return n

    def args(self, decl: NodeDecl, op: OpDef, scope: dict) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        ok = True
        for k, node in decl.args.items():
            try:
                value = evaluate(node, scope)
            except SpecError as e:
                self.c.extend(e)
                ok = False
                continue
            arg = op.args[k]
            if not conforms(value, arg.type):
                self.c.error(node.loc, f"argument '{k}' of {op.name} must be {describe(arg.type) or 'a plain value'}, "
                             f"got {yaml_name(value)} {_short(value)}",
                             self.origin(node) or f"see `specc ops` for {op.name}'s arguments")
                ok = False
                continue
            out[k] = value
        return out if ok else None

    def op_node(self, decl: NodeDecl, vals: list[Val], scope: dict, path: str, repeat: int, item: Item) -> Val | None:
        op = self.ops[decl.op]
        args = self.args(decl, op, scope)
        if args is None:
            return None
        n_out = op.n_outputs(args)
        if repeat and (n_out != 1 or len(vals) != 1):
            self.c.error(decl.repeat.loc, f"repeat needs a node with one input and one output; {op.name} has "
                         f"{len(vals)} and {n_out}", "repeat a block whose outputs feed its inputs")
            return None
        if self.total_guard(decl, max(repeat, 1)):
            return None
        arg_locs = {k: v.loc for k, v in decl.args.items()}
        cur = vals
        for i in range(max(repeat, 1)):
            p = f"{path}.{i}" if repeat else path
            node = GNode(p, op, dict(args), list(cur), decl.loc, arg_locs, p)
            self.nodes.append(node)
            self.by_path[p] = node
            item.nodes.append(node)
            cur = [Val(p)]
        return cur[0]

    def total_guard(self, decl: NodeDecl, n: int) -> bool:
        if self.over_limit:
            return True
        if len(self.nodes) + n > MAX_NODES:
            self.over_limit = True
            self.c.error(decl.loc, f"the spec unrolls to more than {MAX_NODES} nodes",
                         "reduce repeat counts or block nesting")
            return True
        return False

    def block_node(self, decl: NodeDecl, vals: list[Val], scope: dict, path: str, repeat: int,
                   item: Item) -> Val | list | None:
        if self.over_limit:
            return None
        block = self.spec.blocks[decl.block]
        bscope = self.block_scope(block, decl, scope)
        if bscope is None:
            return None
        if repeat and len(block.outputs or (None,)) != len(block.inputs):
            self.c.error(decl.repeat.loc, f"repeat needs block '{block.name}' to have as many outputs as inputs "
                         f"({len(block.outputs or (None,))} and {len(block.inputs)})",
                         "copy i feeds copy i+1, so outputs must match inputs")
            return None
        cur: list[Val] = list(vals)
        for i in range(max(repeat, 1)):
            p = f"{path}.{i}" if repeat else path
            if len(self.nodes) > MAX_NODES:
                self.total_guard(decl, 1)
                return None
            sub = Scope(block.name, p, list(block.inputs), list(cur))
            env = self.layers(block.layers, dict(zip(block.inputs, cur)), block.inputs, bscope, p + ".", sub)
            if block.outputs:
                outs = [self.ref(r, env) for r in block.outputs]
            else:
                last = block.layers[-1]
                outs = [self.ref(Ref(last.name, None, last.loc), env)]
            if any(o is None for o in outs):
                return None
            sub.outputs = list(outs)  # type: ignore[arg-type]
            item.scopes.append(sub)
            cur = outs  # type: ignore[assignment]
        return cur[0] if len(cur) == 1 else cur

    def block_scope(self, block: BlockDecl, decl: NodeDecl, scope: dict) -> dict | None:
        """Global params, overlaid by the block's params: given at the call, else their defaults."""
        bscope = dict(self.spec.params)
        ok = True
        for name, default in block.params.items():
            try:
                if name in decl.args:
                    bscope[name] = evaluate(decl.args[name], scope)
                elif default is not None:
                    bscope[name] = evaluate(default, bscope)
            except SpecError as e:
                self.c.extend(e)
                ok = False
        return bscope if ok else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
