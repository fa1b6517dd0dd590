"""How `resolve` reads a node's refs: outputs and tuple elements, a repeat's copies (`m.*`), refs
written as expressions (a different input per copy), what an absent node passes on (`pass:`), and
the static sizes that `shape(x)` gives an expression.

The resolver keeps, next to each name in the env, `name.*`: the list of a repeated node's per-copy
outputs. `shape()` asks an `IncrementalShapes` pass (compiler.shapes) that follows the resolver
as it appends graph nodes, so a size is known as soon as the node that makes it exists.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .errors import Collector, SpecError, did_you_mean
from .expr import SHAPE_READER, ExprError, Symbolic, evaluate
from .graph import Env, GNode, Val
from .layers import REF
from .ops import lookup
from .source import Node
from .spec import NodeDecl, Ref, Spec

if TYPE_CHECKING:
    from .shapes import IncrementalShapes

QUIET = "\0quiet"  # a failure whose cause is reported elsewhere (a shape error upstream of shape())


class Deferred:
    """A ref written as `${...}`: evaluated per copy, in the copy's scope (`i` included)."""

    def __init__(self, ref: Ref):
        self.ref = ref


class Reader:
    spec: Spec
    c: Collector
    by_path: dict[str, GNode]
    nodes: list[GNode]

    def __init__(self) -> None:
        self.absent: dict[str, Any] = {}  # absent nodes with no input to pass on, by name
        self.ambiguous: dict[str, tuple] = {}  # absent nodes that read several inputs and say no pass: (an error once read)
        self.shapes: "IncrementalShapes | None" = None
        self.shapes_on = True  # off in the front end's partial run (no torch there)

    def value(self, node: Node, scope: dict) -> Any:
        try:
            return evaluate(node, scope)
        except SpecError as e:
            self.c.diagnostics.extend(d for d in e.diagnostics if QUIET not in d.message)
            return _FAIL

    # --- refs -------------------------------------------------------------------------------

    def ref(self, ref: Ref, env: Env, whole_ok: bool = False) -> Any:
        if ref.every:
            return self.copies(ref, env)
        v = env.get(ref.name)
        if v is None:
            if self.unclear(ref.name):
                return None
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
            repeated = f"{ref.name}.*" in env
            self.c.error(ref.loc, f"'{ref.name}' has one output; there is no {ref}",
                         f"write {ref.name}.* for the outputs of all its copies, in order" if repeated
                         else f"write {ref.name}")
            return None
        if n is not None and ref.index >= n:
            self.c.error(ref.loc, f"{producer.op.name} '{ref.name}' returns {n} values; there is no {ref}",
                         f"use {ref.name}.0 … {ref.name}.{n - 1}")
            return None
        return Val(v.node, ref.index)

    def copies(self, ref: Ref, env: Env) -> list | None:
        """`m.*`: each copy's output of the repeated node `m`, in order (none for `repeat: 0`)."""
        outs = env.get(f"{ref.name}.*")
        if outs is None:
            if env.get(ref.name) is not None:
                self.c.error(ref.loc, f"'{ref.name}' is not repeated; {ref} collects the copies of a repeat",
                             f"write {ref.name}")
            return None
        if any(isinstance(o, list) for o in outs):
            self.c.error(ref.loc, f"each copy of '{ref.name}' has several outputs; {ref} needs one per copy",
                         f"give the block of '{ref.name}' one output")
            return None
        return list(outs)

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
        """The node's input values by slot, and where each ref was written; None if one failed.
        `m.*` adds one input per copy; a `${...}` ref stays `Deferred` until its copy is made."""
        op = lookup(decl.op) if decl.op else None
        if decl.refs is None:
            if op is not None and op.required == 0 or prev is None:  # all inputs optional: none unless named
                return [], []
            refs: tuple[Ref, ...] = (Ref(prev, None, decl.loc),)
        else:
            refs = decl.refs
        vals = [Deferred(r) if r.expr is not None else self.ref(r, env) for r in refs]
        if any(v is None for v in vals):
            return None
        if decl.slots is None:
            flat, locs = [], []
            for r, v in zip(refs, vals):
                got = v if r.every else [v]
                flat += got
                locs += [r.loc] * len(got)
            return flat, locs
        assert op is not None
        by_slot = dict(zip(decl.slots, zip(vals, refs)))
        last = max(op.slots.index(s) for s in decl.slots) + 1
        slots = op.slots[:last]
        return [by_slot[s][0] if s in by_slot else None for s in slots], \
            [by_slot[s][1].loc if s in by_slot else None for s in slots]

    def per_copy(self, vals: list, scope: dict, env: Env) -> list | None:
        """Evaluate the `Deferred` refs among `vals` in one copy's scope."""
        out = []
        for v in vals:
            if not isinstance(v, Deferred):
                out.append(v)
                continue
            name = self.value(v.ref.expr, scope)  # type: ignore[arg-type]
            if name is _FAIL:
                return None
            m = REF.fullmatch(name) if isinstance(name, str) else None
            if m is None or m.group(2) == "*":
                self.c.error(v.ref.loc, f"from: gives {name!r}, which is not a ref",
                             "the expression must give a node or input name, such as 'p3' or 'y.1'")
                return None
            ref = Ref(m.group(1), None if m.group(2) is None else int(m.group(2)), v.ref.loc)
            if ref.name not in env:
                self.c.error(v.ref.loc, f"from: gives '{name}', which is not an input or an earlier node here",
                             did_you_mean(ref.name, [k for k in env if not k.startswith("^") and ".*" not in k],
                                          "name") or "refs name an input or an earlier node")
                return None
            got = self.ref(ref, env)
            if got is None:
                return None
            out.append(got)
        return out

    def passes(self, decl: NodeDecl, given: list, env: Env, count: Any) -> Any:
        """What an absent node gives: its `pass:` refs, else its one input. Two or more inputs and no
        `pass:` is an error: the spec must say which one goes on."""
        if decl.passes is not None:
            outs = [self.ref(r, env) for r in decl.passes]
            return None if any(o is None for o in outs) else outs[0] if len(outs) == 1 else outs
        if not given:
            self.absent[decl.name] = "repeat: 0" if count == 0 else "when: false"
            return None
        if len(given) > 1 or isinstance(given[0], Deferred):  # an error once something reads it
            where = decl.repeat if count == 0 and decl.repeat is not None else decl.when
            refs = [str(r) for r in decl.refs or ()] or ["x"]
            self.ambiguous[decl.name] = (
                where.loc if where is not None else decl.loc,
                f"'{decl.name}' is absent here and reads {len(given)} inputs ({', '.join(refs)}); say which one it "
                "passes on", f"add pass: {refs[-1]} (or pass: [{', '.join(refs)}] for all of them)")
            return None
        self.ambiguous.pop(decl.name, None)
        return given[0]

    def unclear(self, name: str) -> bool:
        """Reading an absent node that did not say what it passes: the error, at the node."""
        if name not in self.ambiguous:
            return False
        self.c.error(*self.ambiguous[name])
        return True

    # --- shape() ------------------------------------------------------------------------------

    def shape_scope(self, scope: dict, env: Env) -> dict:
        """`scope` with `shape()` reading the names of `env`."""
        return {**scope, SHAPE_READER: self.reader(env)}

    def reader(self, env: Env) -> Callable[[str], list]:
        def shape(name: str) -> list:
            if name not in env:
                known = [k for k in env if not k.startswith("^") and ".*" not in k]
                raise ExprError(f"shape() reads an input or an earlier node; '{name}' is neither",
                                did_you_mean(name, known, "name") or "write shape(x) with x an input of the block")
            v = env[name]
            if isinstance(v, list):
                raise ExprError(f"'{name}' has {len(v)} outputs; shape() reads one tensor",
                                "read one of them in a node first")
            dims = self.static_shape(v)
            if dims is None or (dims and isinstance(dims[0], tuple)):
                raise ExprError(QUIET if dims is None else f"'{name}' returns a tuple; shape() reads one tensor")
            return [d if isinstance(d, int) else Symbolic(str(d)) for d in dims]
        return shape

    def static_shape(self, v: Val | None) -> Any:
        if v is None or not self.shapes_on:
            return None
        if self.shapes is None:
            from .shapes import IncrementalShapes  # torch: only when a spec asks for a size
            self.shapes = IncrementalShapes(self.spec.inputs, self.nodes, self.by_path, self.spec.dims)
        return self.shapes.shape(v)


_FAIL = object()
