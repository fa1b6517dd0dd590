"""Resolve a `Spec` into a flat graph: blocks and groups inlined, repeats unrolled, conditions
decided, arguments evaluated.

Every graph node gets its module path (`layers.2.attn.q`, `features.3.conv.0.0`), which becomes
its submodule path and state_dict prefix, and keeps the YAML location of the node it came from.
A numbered body (`seq:`) numbers its children like nn.Sequential: a repeat takes consecutive
numbers, an absent node (`when: false`, `repeat: 0`) takes none and passes its input through.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import Collector, SpecError, did_you_mean
from .expr import evaluate
from . import inits
from .graph import Env, GNode, Graph, Item, Scope, Tie, Val
from .layers import IDENT
from .ops import OpDef, lookup, problems
from .source import Node
from .spec import BlockDecl, Body, NodeDecl, Ref, Spec
from .types import conforms, describe, yaml_name

MAX_NODES = 20_000
_IN = "^in"  # an inline group's input, as its first node's implicit ref


@dataclass
class _Ctx:
    """Where a body is being resolved: its params (and repeat index), path prefix and numbering."""

    params: dict[str, Any]
    prefix: str
    scope_inputs: list[Val]
    numbered: bool = False
    counter: list[int] = field(default_factory=lambda: [0])
    env: Env = field(default_factory=dict)  # what the body has defined so far (inline groups read it)
    frozen: bool = False  # under a `trainable: false`

    def number(self) -> str:
        self.counter[0] += 1
        return str(self.counter[0] - 1)


def resolve(spec: Spec) -> Graph:
    """Inline blocks and groups and unroll repeats; collect every error of the pass."""
    r = _Resolver(spec)
    inputs = [Val(n) for n in spec.inputs]
    root = Scope("top", None, "", spec.body.numbered, list(spec.inputs), inputs)
    env: Env = {name: Val(name) for name in spec.inputs}
    first = next(iter(spec.inputs), None)
    ctx = _Ctx(spec.params, "", inputs, spec.body.numbered)
    env, last, last_name = r.body(spec.body, env, first, ctx, root)
    outputs: list[tuple[str, Val]] = []
    if not r.c.diagnostics:
        if spec.outputs:
            for ref in spec.outputs:
                outputs.extend(_named(ref.alias or str(ref).replace(".", "_"), r.ref(ref, env, whole_ok=True), r))
        elif last_name is not None:
            outputs.extend(_named(last_name, last, r))
    r.raise_if_any()
    root.outputs = [v for _, v in outputs]
    return Graph(spec.name, dict(spec.inputs), r.nodes, outputs, root)


def _named(name: str, v: Any, r: "_Resolver") -> list[tuple[str, Val]]:
    if v is None:
        return []
    if isinstance(v, list):
        return [(f"{name}_{i}", x) for i, x in enumerate(v)]
    producer = r.by_path.get(v.node)
    n = producer.n_outputs if producer is not None and v.index is None else 1
    if n is None:
        r.c.error(producer.loc, f"{producer.op.name} '{v.node}' returns a tuple whose length depends on its input",
                  "list its elements in outputs: [name.0, name.1]")
        return []
    if n > 1:
        return [(f"{name}_{i}", Val(v.node, i)) for i in range(n)]
    return [(name, v)]


class _Resolver:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.c = Collector()
        self.nodes: list[GNode] = []
        self.by_path: dict[str, GNode] = {}
        self.over_limit = False  # once the node limit is hit, expansion stops everywhere
        self.absent: dict[str, Any] = {}  # absent nodes with no input to pass on, by name

    def raise_if_any(self) -> None:
        seen, unique = set(), []
        for d in self.c.diagnostics:  # a block instantiated N times reports its error once
            key = (d.file, d.line, d.col, d.message)
            if key not in seen:
                seen.add(key)
                unique.append(d)
        if unique:
            raise SpecError(unique)

    def error(self, node: Node, message: str, hint: str) -> None:
        """An error in a value: at the --set override it came from, when it came from one (the spec
        line that uses it goes in the hint), else at the value itself."""
        text = node.value if isinstance(node.value, str) else ""
        names = {n for n in re.findall(r"[A-Za-z_]\w*", text) if n in self.spec.param_locs} if "$" in text else set()
        from_set = [n for n in names if self.spec.param_locs[n].file == "--set"]
        if len(from_set) == 1:
            where = self.spec.param_locs[from_set[0]]
            self.c.error(where, message, f"'{from_set[0]}' is used at {node.loc}; {hint}")
        else:
            self.c.error(node.loc, message, hint)

    def value(self, node: Node, scope: dict) -> Any:
        try:
            return evaluate(node, scope)
        except SpecError as e:
            self.c.extend(e)
            return _FAIL

    # --- refs -------------------------------------------------------------------------------

    def ref(self, ref: Ref, env: Env, whole_ok: bool = False) -> Any:
        v = env.get(ref.name)
        if v is None:
            if ref.name in self.absent:
                self.c.error(ref.loc, f"'{ref.name}' is absent here ({self.absent[ref.name]}) and has no input to "
                             "pass on", "give it a from:, or make the node that reads it conditional too")
            return None  # otherwise already reported
        if isinstance(v, list):
            return self.pick(ref, v, whole_ok)
        producer = self.by_path.get(v.node)
        n = producer.n_outputs if producer is not None and v.index is None else 1
        if ref.index is None:
            if n != 1 and not whole_ok:
                self.c.error(ref.loc, f"{producer.op.name} '{ref.name}' returns {n or 'several'} values; pick one",
                             f"write {ref.name}.0 (the first) or {ref.name}.1")
                return None
            return v
        if n == 1:
            self.c.error(ref.loc, f"'{ref.name}' has one output; there is no {ref}", f"write {ref.name}")
            return None
        if n is not None and ref.index >= n:
            self.c.error(ref.loc, f"{producer.op.name} '{ref.name}' returns {n} values; there is no {ref}",
                         f"use {ref.name}.0 … {ref.name}.{n - 1}")
            return None
        return Val(v.node, ref.index)

    def pick(self, ref: Ref, v: list, whole_ok: bool) -> Any:
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

    def inputs_of(self, decl: NodeDecl, env: Env, prev: str | None) -> tuple[list, list] | None:
        """The node's input values by slot, and where each ref was written; None if one failed."""
        op = lookup(decl.op) if decl.op else None
        if decl.refs is None:
            if op is not None and op.required == 0 or prev is None:  # all inputs optional: none unless named
                return [], []
            refs: tuple[Ref, ...] = (Ref(prev, None, decl.loc),)
        else:
            refs = decl.refs
        vals = [self.ref(r, env) for r in refs]
        if any(v is None for v in vals):
            return None
        if decl.slots is None:
            return vals, [r.loc for r in refs]
        assert op is not None
        by_slot = dict(zip(decl.slots, zip(vals, refs)))
        last = max(op.slots.index(s) for s in decl.slots) + 1
        slots = op.slots[:last]
        return [by_slot[s][0] if s in by_slot else None for s in slots], \
            [by_slot[s][1].loc if s in by_slot else None for s in slots]

    # --- bodies -----------------------------------------------------------------------------

    def body(self, body: Body, env: Env, prev: str | None, ctx: _Ctx, into: Scope) -> tuple[Env, Any, str | None]:
        """Resolve each node in order; returns the env, the body's output and its last node's name."""
        env = dict(env)
        for decl in body.nodes:
            got = self.inputs_of(decl, env, prev)
            prev = decl.name
            ctx.env = env
            env[decl.name] = None if got is None else self.node(decl, got[0], got[1], ctx, into)
        if body.outputs:
            outs = [self.ref(r, env) for r in body.outputs]
            return env, (None if any(o is None for o in outs) else outs[0] if len(outs) == 1 else outs), prev
        return env, (env.get(prev) if prev is not None else None), prev

    def node(self, decl: NodeDecl, vals: list, locs: list, ctx: _Ctx, into: Scope) -> Any:
        present = self.present(decl, ctx.params)
        count = self.repeat(decl, ctx.params)
        trainable = self.flag(decl.trainable, "trainable", ctx.params)
        if present is None or count is _FAIL or trainable is None:
            return None
        given = [v for v in vals if v is not None]
        if not present or count == 0:  # absent: an op passes its first input on, a block all of them
            if not given:
                self.absent[decl.name] = "repeat: 0" if count == 0 else "when: false"
                return None
            return given[0] if len(given) == 1 or decl.block is None else given
        kind = "op" if decl.op else "block" if decl.block else "group"
        item = Item(decl.name, kind, count or 0, list(vals))
        cur: Any = list(vals)
        for k in range(count if count is not None else 1):
            key = self.key(decl, k, count, ctx)
            if key is None or self.over_limit:
                return None
            local = dict(ctx.params, i=k) if count is not None else ctx.params
            sub = _Ctx(local, ctx.prefix, ctx.scope_inputs, ctx.numbered, ctx.counter, ctx.env,
                       ctx.frozen or not trainable)
            path = ctx.prefix + key
            out = self.op_copy(decl, cur, locs, sub, path, item) if kind == "op" else \
                self.block_copy(decl, cur, sub, path, item) if kind == "block" else self.group_copy(decl, cur, sub, path, item)
            if out is None:
                return None
            item.keys.append(key)
            cur = out if isinstance(out, list) else [out]
            locs = [decl.loc] * len(cur)
        item.output = cur[0] if len(cur) == 1 else cur
        into.items.append(item)
        return item.output

    def present(self, decl: NodeDecl, scope: dict) -> bool | None:
        return self.flag(decl.when, "when", scope)

    def flag(self, node: Node | None, key: str, scope: dict) -> bool | None:
        """`when:` or `trainable:`: true (also when absent) or false; None after an error."""
        if node is None:
            return True
        v = self.value(node, scope)
        if v is _FAIL:
            return None
        if not isinstance(v, bool):
            self.error(node, f"{key}: must be true or false, got {yaml_name(v)} {_short(v)}",
                       f"write {key}: $flag or {key}: ${{i == 0}}")
            return None
        return v

    def repeat(self, decl: NodeDecl, scope: dict) -> Any:
        """None: no repeat key (the node is not indexed); else the number of copies, 0 included."""
        if decl.repeat is None:
            return None
        n = self.value(decl.repeat, scope)
        if n is _FAIL:
            return _FAIL
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            self.error(decl.repeat, f"repeat must be an integer ≥ 0, got {n!r}", "write repeat: 4 (0: no node)")
            return _FAIL
        if n + len(self.nodes) > MAX_NODES:
            self.c.error(decl.repeat.loc, f"repeat: {n} would make more than {MAX_NODES} nodes",
                         "a spec graph is unrolled; use a smaller repeat")
            return _FAIL
        return n

    def key(self, decl: NodeDecl, k: int, count: int | None, ctx: _Ctx) -> str | None:
        """The copy's attribute name: its number in a seq, its name, `name.k`, or `name.<template>`."""
        owns = decl.op is None or (lookup(decl.op) or _NO_OP).kind != "function"
        if decl.names is not None:
            template = self.value(decl.names, dict(ctx.params, i=k))
            if not isinstance(template, str) or "{i}" not in template:
                if template is not _FAIL:
                    self.c.error(decl.names.loc, f"names: must be a template with {{i}}, got {template!r}",
                                 "names: encoder_layer_{i}")
                return None
            name = template.replace("{i}", str(k))
            if not IDENT.fullmatch(name):
                self.c.error(decl.names.loc, f"names: gives '{name}', which is not a valid name",
                             "use letters, digits and '_' around {i}")
                return None
            if ctx.numbered and owns:
                ctx.number()  # a named child still takes its place, as Sequential.append would
                return name
            return f"{decl.name}.{name}"
        if ctx.numbered and owns:
            return ctx.number()
        return decl.name if count is None else f"{decl.name}.{k}"

    # --- ops ----------------------------------------------------------------------------------

    def args(self, decl: NodeDecl, op: OpDef, scope: dict) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        ok = True
        for k, node in decl.args.items():
            value = self.value(node, scope)
            if value is _FAIL:
                ok = False
                continue
            arg = op.args[k]
            if not conforms(value, arg.type):
                self.error(node, f"argument '{k}' of {op.name} must be {describe(arg.type) or 'a plain value'}, "
                           f"got {yaml_name(value)} {_short(value)}", f"see `specc ops` for {op.name}'s arguments")
                ok = False
                continue
            out[k] = value
        return out if ok else None

    def op_copy(self, decl: NodeDecl, vals: list, locs: list, ctx: _Ctx, path: str, item: Item) -> Val | None:
        op = lookup(decl.op)  # type: ignore[arg-type]
        assert op is not None
        args = self.args(decl, op, ctx.params)
        if args is None:
            return None
        if op.kind == "tensor" and not _tensor_args(args, decl, self.c):
            return None
        found = problems(op, args, len([v for v in vals if v is not None]))
        for bad in found:
            self.c.error(decl.args[bad.arg].loc if bad.arg in decl.args else decl.loc, bad.message, bad.hint)
        if found:
            return None
        if op.specialize is not None:
            op = op.specialize(args)
        if item.repeat and (op.n_outputs(args) != 1 or len([v for v in vals if v is not None]) > 1):
            self.c.error(decl.repeat.loc, f"repeat needs a node with one input and one output; {op.name} has "  # type: ignore[union-attr]
                         f"{len(vals)} and {op.n_outputs(args) or 'several'}", "repeat a block whose outputs feed its inputs")
            return None
        ties, given = self.ties(decl, op, ctx.params, path), self.inits(decl, ctx.params)
        if ties is None or given is None or self.total_guard(decl, 1):
            return None
        node = GNode(path, op, args, list(vals), decl.loc, {k: v.loc for k, v in decl.args.items()}, list(locs),
                     list(ctx.scope_inputs), ties, given, not ctx.frozen)
        self.nodes.append(node)
        self.by_path[path] = node
        item.nodes.append(node)
        return Val(path)

    def ties(self, decl: NodeDecl, op: OpDef, scope: dict, path: str) -> list:
        """`tie: {weight: transformer.wte.weight}`: the named tensor must be a module's, defined earlier."""
        if decl.tie is None:
            return []
        value = self.value(decl.tie, scope)
        if value is _FAIL:
            return None  # type: ignore[return-value]
        out = []
        for param, key in value.items():
            if key is None or key == "":  # `tie: {weight: "${'wte.weight' if tied else ''}"}`: untied here
                continue
            loc = decl.tie.value[param].loc if decl.tie.is_map and param in decl.tie.value else decl.tie.loc
            owner, _, tensor = key.rpartition(".") if isinstance(key, str) else ("", "", "")
            target = self.by_path.get(owner)
            if target is None or target.op.kind != "module" or not tensor:
                known = sorted(f"{p}.weight" for p, n in self.by_path.items() if n.op.kind == "module")
                self.c.error(loc, f"tie: {key!r} is not a parameter of an earlier module node",
                             did_you_mean(str(key), known, "key") or "name a state_dict key such as transformer.wte.weight")
                return None  # type: ignore[return-value]
            out.append(Tie(param, key, owner, loc, decl.tie.key_locs.get(param, loc)))
        return out

    def inits(self, decl: NodeDecl, scope: dict) -> dict | None:
        """`init: {weight: {normal: 0.02}, bias: zeros}`: each value checked (the names, once the
        module exists)."""
        if decl.inits is None or not decl.inits.is_map:
            return {}
        out = {}
        for param, node in decl.inits.value.items():
            value = self.value(node, scope)
            if value is _FAIL:
                return None
            bad = inits.problem(value)
            if bad is not None:
                self.c.error(node.loc, *bad)
                return None
            out[param] = (value, decl.inits.key_locs.get(param, node.loc))
        return out

    def total_guard(self, decl: NodeDecl, n: int) -> bool:
        if self.over_limit:
            return True
        if len(self.nodes) + n > MAX_NODES:
            self.over_limit = True
            self.c.error(decl.loc, f"the spec unrolls to more than {MAX_NODES} nodes",
                         "reduce repeat counts or block nesting")
            return True
        return False

    # --- blocks and groups ----------------------------------------------------------------------

    def block_copy(self, decl: NodeDecl, cur: list, ctx: _Ctx, path: str, item: Item) -> Any:
        block = self.spec.blocks[decl.block]  # type: ignore[index]
        bscope = self.block_scope(block, decl, ctx.params)
        if bscope is None:
            return None
        if item.repeat and len(block.outputs or (None,)) != len(block.inputs):
            self.c.error(decl.repeat.loc, f"repeat needs block '{block.name}' to have as many outputs as inputs "  # type: ignore[union-attr]
                         f"({len(block.outputs or (None,))} and {len(block.inputs)})",
                         "copy i feeds copy i+1, so outputs must match inputs")
            return None
        sub = Scope("block", block.name, path, block.body.numbered, list(block.inputs), list(cur))
        inner = _Ctx(bscope, path + ".", list(cur), block.body.numbered, frozen=ctx.frozen)
        env, out, _ = self.body(block.body, dict(zip(block.inputs, cur)), block.inputs[0], inner, sub)
        return self.close(sub, out, item)

    def group_copy(self, decl: NodeDecl, cur: list, ctx: _Ctx, path: str, item: Item) -> Any:
        group = decl.group
        assert group is not None
        given = [v for v in cur if v is not None]
        sub = Scope("group", decl.name, path, group.numbered, [_IN] if given else [], given[:1])
        inner = _Ctx(ctx.params, path + ".", ctx.scope_inputs + given[:1], group.numbered, frozen=ctx.frozen)
        inner_env = dict(ctx.env)
        if given:
            inner_env[_IN] = given[0]
        _, out, _ = self.body(group, inner_env, _IN if given else None, inner, sub)
        return self.close(sub, out, item)

    def close(self, sub: Scope, out: Any, item: Item) -> Any:
        if out is None:
            return None
        sub.outputs = list(out) if isinstance(out, list) else [out]
        item.scopes.append(sub)
        return out

    def block_scope(self, block: BlockDecl, decl: NodeDecl, scope: dict) -> dict | None:
        """Global params, overlaid by the block's params: given at the call, else their defaults."""
        bscope = dict(self.spec.params)
        ok = True
        for name, default in block.params.items():
            if name in decl.args:
                value = self.value(decl.args[name], scope)
            elif default is not None:
                value = self.value(default, bscope)
            else:
                continue
            if value is _FAIL:
                ok = False
            else:
                bscope[name] = value
        return bscope if ok else None


_FAIL = object()
_NO_OP = OpDef("", "function", "", {})


def _tensor_args(args: dict, decl: NodeDecl, c: Collector) -> bool:
    """Parameter/Buffer: a shape of positive sizes and an init that fits its dtype."""
    shape, init = args.get("shape", []), args.get("init", "zeros")
    loc = decl.args["shape"].loc if "shape" in decl.args else decl.loc
    if not shape or any(d < 1 for d in shape):
        c.error(loc, f"shape must list positive sizes, got {shape!r}", "shape: [1, 1, 768]")
        return False
    bad = inits.problem(init, args.get("dtype", "float32"), shape=tuple(shape))
    if bad is not None:
        c.error(decl.args["init"].loc if "init" in decl.args else decl.loc, *bad)
    return bad is None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

