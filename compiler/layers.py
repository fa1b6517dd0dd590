"""Check a body of nodes (the top level's, a block's or an inline group's): names, refs, ops, their
arguments, block calls and groups. Values are checked later by `resolve`, once params are known.

Refs are lexical: a node reads the inputs and earlier nodes of its own body, and, inside an inline
group, whatever the enclosing bodies had defined before the group.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

from .catalog import module_attributes
from .errors import Collector, did_you_mean
from .ops import OpDef, lookup, registry, snake
from .source import Node
from .spec import NODE_KEYS, BlockDecl, Body, NodeDecl, Ref

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REF = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\.([0-9]{1,6}))?")
MAX_NAME = 64
ATTRIBUTES = module_attributes()  # a node of such a name would shadow nn.Module's (`self` does not: BERT's attention.self)
RESERVED = ATTRIBUTES | {"self"}  # input names: `self` is forward's own first parameter
_BODY_KINDS = ("op", "block", "seq", "layers")
_GROUP_KEYS = ("name", "from", "repeat", "names", "when", "outputs", "seq", "layers", "trainable")


def ident(node: Node, what: str, c: Collector) -> bool:
    v = node.value
    if not isinstance(v, str) or not IDENT.fullmatch(v) or len(v) > MAX_NAME or keyword.iskeyword(v):
        shown = v if isinstance(v, str) else node.plain()
        hint = "use letters, digits and '_', starting with a letter or '_'"
        if isinstance(v, str) and not v.isascii():
            hint = "names must be ASCII; a look-alike letter (such as a Cyrillic 'а') may have slipped in"
        c.error(node.loc, f"invalid {what} name {shown!r}", hint)
        return False
    return True


@dataclass
class Scope:
    """What a body's nodes may refer to while it is being checked."""

    inputs: tuple[str, ...]
    outer: tuple[str, ...] = ()  # names of enclosing bodies, visible inside an inline group
    defined: list[str] = field(default_factory=list)
    later: set[str] = field(default_factory=set)  # names written further down (for a better message)
    counts: dict[str, int] = field(default_factory=dict)  # derived-name counters

    def visible(self) -> list[str]:
        return list(self.outer) + list(self.inputs) + self.defined


def check_body(node: Node, numbered: bool, inputs: tuple[str, ...], checker: "BodyChecker", where: str,
               outputs: Node | None = None) -> Body:
    """A `layers:` (named) or `seq:` (numbered) list of nodes, with its owner's `outputs:`."""
    key = "seq" if numbered else "layers"
    if not node.is_seq or not node.value:
        checker.c.error(node.loc, f"'{key}' of {where} must be a non-empty list of nodes",
                        f"{key}: [{{op: Linear, out_features: 8}}]")
        return Body(numbered, (), None, node.loc)
    return checker.body(node, numbered, Scope(inputs), outputs)


class BodyChecker:
    def __init__(self, blocks: dict[str, BlockDecl], c: Collector):
        self.blocks, self.c = blocks, c

    def body(self, node: Node, numbered: bool, scope: Scope, outputs: Node | None) -> Body:
        entries = [_entry(n, self.c) for n in node.value]
        self.reserve(entries, scope)
        decls: list[NodeDecl] = []
        for i, (raw, e) in enumerate(zip(node.value, entries)):
            if e is None:
                continue
            decl = _NodeCheck(self, raw, e, scope, first=i == 0).run()
            name = decl.name if decl is not None else e["name"].value if isinstance(
                getattr(e.get("name"), "value", None), str) else None
            if decl is not None:
                decls.append(decl)
            if name is not None:
                scope.defined.append(name)
        refs = None
        if outputs is not None:
            refs = output_refs(outputs, set(scope.visible()), self.c)
        return Body(numbered, tuple(decls), refs, node.loc)

    def reserve(self, entries: list, scope: Scope) -> None:
        """Written names first, so a derived name never takes a name written further down."""
        taken = set(scope.inputs)
        for e in entries:
            n = e.get("name") if e is not None else None
            if n is None or not isinstance(n.value, str):
                continue
            if n.value in taken and ident(n, "node", self.c):
                first = "an input" if n.value in scope.inputs else "an earlier node"
                self.c.error(n.loc, f"node name '{n.value}' is already used by {first}", "give each node its own name")
            taken.add(n.value)
        scope.later = taken


def _entry(n: Node, c: Collector) -> dict[str, Node] | None:
    """A node entry as a key -> Node mapping: `ReLU` becomes {op: ReLU}."""
    if isinstance(n.value, str):
        return {"op": n}
    if n.is_map:
        return dict(n.value)
    c.error(n.loc, f"a node is an op name or a mapping, not {n.plain()!r}", "write - ReLU or - {op: Linear, out_features: 8}")
    return None


class _NodeCheck:
    """One node entry: its kind, name, refs, repeat and arguments."""

    def __init__(self, owner: "BodyChecker", raw: Node, e: dict[str, Node], scope: Scope, first: bool):
        self.owner, self.raw, self.e, self.scope, self.first = owner, raw, e, scope, first
        self.c = owner.c
        self.arg_locs = raw.key_locs if raw.is_map else {}
        self.op: OpDef | None = None
        self.block: str | None = None
        self.group: tuple[str, Node] | None = None

    def run(self) -> NodeDecl | None:
        before = len(self.c.diagnostics)
        if not self.kind():
            return None
        name, derived = self.name()
        n_diag = len(self.c.diagnostics)
        refs, slots = self.refs()
        self.refs_ok = len(self.c.diagnostics) == n_diag
        args = {k: v for k, v in self.e.items() if k not in NODE_KEYS}
        inits = args.pop("init", None) if self.op is not None and self.op.kind == "module" else None
        if inits is not None and not inits.is_map:
            self.c.error(inits.loc, "a module's init: maps its parameters to initial values",
                         "init: {weight: {normal: 0.02}, bias: zeros}")
        self.node_keys()
        body = None
        if self.op is not None:
            self.op_args(args, refs, slots)
        elif self.block is not None:
            self.block_call(args, refs)
        else:
            body = self.group_body(args, refs)
        if len(self.c.diagnostics) > before or name is None:
            return None
        return NodeDecl(name, derived, self.op.name if self.op else None, self.block, body, refs, slots,
                        self.e.get("repeat"), self.e.get("names"), self.e.get("when"), self.e.get("tie"), args,
                        self.raw.loc, inits, self.e.get("trainable"))

    # --- kind ---------------------------------------------------------------------------

    def kind(self) -> bool:
        given = [k for k in _BODY_KINDS if k in self.e]
        if len(given) > 1:
            self.c.error(self.arg_locs.get(given[1], self.e[given[1]].loc), f"a node has one of op, block, seq or layers, not {given[0]} and "
                         f"{given[1]}", "split it into two nodes")
            return False
        if not given:
            self.c.error(self.raw.loc, "node has no 'op' or 'block'", "add op: Linear (or block: NAME, or seq: [...])")
            return False
        kind = given[0]
        if kind in ("seq", "layers"):
            self.group = (kind, self.e[kind])
            return True
        if kind == "op":
            return self.op_name(self.e["op"])
        return self.block_name(self.e["block"])

    def op_name(self, op_n: Node) -> bool:
        blocks = self.owner.blocks
        if not isinstance(op_n.value, str):
            self.c.error(op_n.loc, f"op must be a name, not {op_n.plain()!r}", "write op: Linear")
            return False
        op = lookup(op_n.value)
        if op is None and op_n.value in blocks:
            return self.block_name(op_n)  # `- encoder` names a block with no params
        if op is None:
            hint = did_you_mean(op_n.value, list(registry()) + sorted(blocks))
            if "." in op_n.value:
                hint = "ops are names from the registry (see `specc ops`); import paths are never resolved"
            self.c.error(op_n.loc, f"unknown op '{op_n.value}'", hint or "see `specc ops` for the list")
            return False
        self.op = op
        return True

    def block_name(self, block_n: Node) -> bool:
        blocks = self.owner.blocks
        if not isinstance(block_n.value, str) or block_n.value not in blocks:
            self.c.error(block_n.loc, f"unknown block {block_n.plain()!r}",
                         did_you_mean(str(block_n.value), blocks, "block") or "define it under blocks:")
            return False
        self.block = block_n.value
        return True

    # --- name and refs --------------------------------------------------------------------

    def name(self) -> tuple[str | None, bool]:
        name_n = self.e.get("name")
        if name_n is not None:
            if not ident(name_n, "node", self.c):
                return None, False
            if name_n.value in ATTRIBUTES:
                self.c.error(name_n.loc, f"node name '{name_n.value}' is reserved by torch.nn.Module", "rename the node")
            return name_n.value, False
        base = snake(self.op.name) if self.op is not None else self.block or self.group[0]  # type: ignore[index]
        counts, taken = self.scope.counts, self.scope.later
        k = counts.get(base, 0)
        name = base if k == 0 else f"{base}_{k}"
        while name in taken or name in self.scope.inputs or name in ATTRIBUTES:  # `to` becomes to_1
            k += 1
            name = f"{base}_{k}"
        counts[base] = k + 1
        taken.add(name)
        return name, True

    def refs(self) -> tuple[tuple[Ref, ...] | None, tuple[str, ...] | None]:
        node = self.e.get("from")
        if node is None:
            inputs = self.scope.inputs
            if self.first and len(inputs) > 1 and not self.scope.outer and not (self.op is not None and self.op.required == 0):
                self.c.error(self.raw.loc, f"the first node must say which input it reads: {', '.join(inputs)}",
                             f"add from: {inputs[0]}")
            return None, None
        if node.is_map:
            return self.slot_refs(node)
        items = node.value if node.is_seq else [node]
        if not items:
            self.c.error(node.loc, "'from' is empty", "name the node or input this node reads")
            return (), None
        return tuple(self.parse(items)), None

    def slot_refs(self, node: Node) -> tuple[tuple[Ref, ...], tuple[str, ...]]:
        """`from: {query: x, attn_mask: mask}`: refs by input slot."""
        slots = self.op.slots if self.op is not None else ()
        if self.op is None or self.op.variadic:
            self.c.error(node.loc, "from: as a mapping names the inputs of an op", "write from: [a, b]")
            return (), ()
        names, refs = [], []
        for key, value in node.value.items():
            if key not in slots:
                self.c.error(node.key_locs[key], f"{self.op.name} has no input '{key}'",
                             did_you_mean(key, slots, "input") or f"its inputs: {', '.join(slots)}")
                continue
            got = self.parse([value])
            if got:
                names.append(key)
                refs.append(got[0])
        return tuple(refs), tuple(names)

    def parse(self, items: list[Node]) -> list[Ref]:
        return _refs(items, self.scope.visible(), self.scope.later, "ref", self.c)

    # --- keys that shape the node -----------------------------------------------------------

    def node_keys(self) -> None:
        e = self.e
        if "names" in e and "repeat" not in e:
            self.c.error(e["names"].loc, "names: is the name template of a repeat's copies", "add repeat: N, or drop names:")
        if "outputs" in e and self.group is None:
            self.c.error(self.arg_locs.get("outputs", self.raw.loc), "outputs: belongs to a group (seq: or layers:)",
                         "drop it; a node's output is the node itself")
        if "trainable" in e and self.op is not None and self.op.kind == "function":
            self.c.error(self.arg_locs.get("trainable", self.raw.loc), f"trainable: freezes parameters; "
                         f"{self.op.name} has none", "put it on a module, a Parameter, a block or a group node")
        tie = e.get("tie")
        if tie is not None:
            if self.op is None or self.op.kind != "module":
                self.c.error(tie.loc, "tie: shares a module's parameter with another node's", "use it on a module op")
            elif not tie.is_map or not tie.value:
                self.c.error(tie.loc, "tie: maps a parameter to the state_dict key it shares",
                             "tie: {weight: transformer.wte.weight}")

    # --- ops, blocks and groups -------------------------------------------------------------

    def op_args(self, args: dict[str, Node], refs: tuple[Ref, ...] | None, slots: tuple[str, ...] | None) -> None:
        op, c = self.op, self.c
        assert op is not None
        n_refs = (1 if op.required else 0) if refs is None else len(refs)
        lo, hi = op.inputs
        if not self.refs_ok:
            pass  # a bad ref was reported; counting what is left would only add noise
        elif refs is not None and slots is None and (n_refs < lo or (hi != -1 and n_refs > hi)):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi != -1 else f"at least {lo}"
            c.error(self.e["from"].loc, f"{op.name} takes {want} input{'s' if hi != 1 else ''}, got {n_refs}",
                    "list the inputs in from: [a, b]" if n_refs < lo else "remove refs from from:")
        elif refs is None and lo > 1:
            c.error(self.raw.loc, f"{op.name} takes {lo} inputs", f"list them in from: [{', '.join(op.slots[:lo])}]")
        elif slots is not None:
            missing = [s for s in op.slots[:op.required] if s not in slots]
            if missing:
                c.error(self.e["from"].loc, f"{op.name} needs input '{missing[0]}'", f"add {missing[0]}: REF to from:")
        misspelled = self.unknown_args(args)
        for a in op.args.values():
            if a.required and a.name not in args and not (op.infer and op.infer.arg == a.name):
                if a.name != "other" and a.name not in misspelled:
                    c.error(self.raw.loc, f"{op.name} needs argument '{a.name}'", f"add {a.name}: ...")
        if "other" in op.args and "other" in op.slots and self.refs_ok:
            self.other(args, n_refs)

    def unknown_args(self, args: dict[str, Node]) -> set[str]:
        op = self.op
        assert op is not None
        misspelled = set()
        for k in args:
            if k in op.args:
                continue
            hint = did_you_mean(k, op.args, "argument")
            if hint.startswith("did you mean"):
                misspelled.add(hint.split("'")[1])
            if k in ("device", "dtype") and op.kind != "tensor":
                hint = "devices and dtypes are chosen by specc train, not per node"
            hint = hint or (f"{op.name} takes no arguments" if not op.args else "see `specc ops` for its arguments")
            self.c.error(self.arg_locs.get(k, self.raw.loc), f"unknown argument '{k}' for {op.name}", hint)
        return misspelled

    def other(self, args: dict[str, Node], n_refs: int) -> None:
        op = self.op
        assert op is not None
        numbers = [k for k in ("other", "input") if k in args and k in op.args]  # `input:` a number on the left
        if n_refs == op.required and not numbers:
            count = {1: "one input", 2: "two inputs"}.get(n_refs, f"{n_refs} inputs")
            self.c.error(self.raw.loc, f"{op.name} with {count} needs 'other'",
                         "add other: 2.0, or give one more ref in from:")
        if n_refs > op.required and numbers:
            self.c.error(self.arg_locs.get(numbers[0], self.raw.loc), f"{op.name} has {n_refs} inputs; "
                         f"'{numbers[0]}' would be one more", f"drop {numbers[0]}:, or give one ref less in from:")
        if len(numbers) == 2:
            self.c.error(self.arg_locs.get("input", self.raw.loc), f"{op.name} takes one number: other: (on the "
                         "right) or input: (on the left), not both", "drop one of them")

    def block_call(self, args: dict[str, Node], refs: tuple[Ref, ...] | None) -> None:
        b = self.owner.blocks[self.block]  # type: ignore[index]
        for k in args:
            if k not in b.params:
                self.c.error(self.arg_locs.get(k, self.raw.loc), f"block '{b.name}' has no param '{k}'",
                             did_you_mean(k, b.params, "param") or "declare it under the block's params:")
        for p, default in b.params.items():
            if default is None and p not in args:
                self.c.error(self.raw.loc, f"block '{b.name}' needs param '{p}'", f"add {p}: ... to this node")
        n_refs = 1 if refs is None else len(refs)
        if n_refs != len(b.inputs) and self.refs_ok:
            loc = self.e["from"].loc if "from" in self.e else self.raw.loc
            self.c.error(loc, f"block '{b.name}' takes {len(b.inputs)} input{'s' if len(b.inputs) != 1 else ''} "
                         f"({', '.join(b.inputs)}), got {n_refs}", "list one ref per block input in from:")

    def group_body(self, args: dict[str, Node], refs: tuple[Ref, ...] | None) -> Body | None:
        kind, node = self.group  # type: ignore[misc]
        for k in args:
            self.c.error(self.arg_locs.get(k, self.raw.loc), f"unknown key '{k}' for a group",
                         did_you_mean(k, _GROUP_KEYS, "key") or "a group has name, from, repeat, names, when, "
                         "outputs and its nodes (seq: or layers:)")
        if refs is not None and len(refs) > 1:
            self.c.error(self.e["from"].loc, "a group reads one ref", "its nodes can read any earlier name themselves")
        if not node.is_seq or not node.value:
            self.c.error(node.loc, f"'{kind}' must be a non-empty list of nodes", f"{kind}: [{{op: Linear, out_features: 8}}]")
            return None
        start = (str(refs[0]),) if refs else ()
        scope = Scope(start, tuple(self.scope.visible()))
        if not refs:  # the group's first node reads the previous node, like any node
            scope.inputs = ()
        return self.owner.body(node, kind == "seq", scope, self.e.get("outputs"))


def _refs(items: list[Node], defined: list[str], later: set[str], what: str, c: Collector) -> list[Ref]:
    """Parse refs and keep those that name something defined before them."""
    refs = []
    for item in items:
        ref = parse_ref(item, c)
        if ref is None:
            continue
        if ref.name not in defined:
            if ref.name in later:
                c.error(item.loc, f"ref '{ref.name}' names a node defined further down",
                        "a node reads inputs and earlier nodes; move it below the node it reads")
            else:
                c.error(item.loc, f"unknown {what} '{ref.name}'",
                        did_you_mean(ref.name, defined, "name") or "refs name an input or an earlier node")
            continue
        refs.append(ref)
    return refs


def parse_ref(item: Node, c: Collector) -> Ref | None:
    m = REF.fullmatch(item.value) if isinstance(item.value, str) else None
    if not m:
        hint = "a ref is a node or input name, or name.K for element K"
        if isinstance(item.value, str) and not item.value.isascii():
            hint = "names are ASCII; a look-alike letter (such as a Cyrillic 'х') may have slipped in"
        c.error(item.loc, f"invalid ref {item.plain()!r}", hint)
        return None
    return Ref(m.group(1), None if m.group(2) is None else int(m.group(2)), item.loc)


def output_refs(node: Node, defined: set[str], c: Collector) -> tuple[Ref, ...] | None:
    """`outputs: [a, b.1]`, or `outputs: {logits: lm_head}` to name them."""
    if node.is_map:
        refs = []
        for alias, item in node.value.items():
            if ident(Node(alias, node.key_locs[alias]), "output", c):
                refs += [Ref(r.name, r.index, r.loc, alias) for r in _refs([item], sorted(defined), set(), "output ref", c)]
        items = list(node.value.values())
    else:
        items = node.value if node.is_seq else [node]
        refs = None
    if not items:
        c.error(node.loc, "'outputs' is empty", "list the refs to return, or drop outputs: for the last node")
        return None
    refs = refs if refs is not None else _refs(items, sorted(defined), set(), "output ref", c)
    if len({str(r) for r in refs}) != len(refs):
        c.error(node.loc, "outputs list the same ref twice", "list each output once")
    return tuple(refs)

