"""Check a list of nodes (the top level's or a block's): names, refs, ops, their arguments and
block calls. Values are checked later by `resolve`, once block params are known."""
from __future__ import annotations

import keyword
import re

from .errors import Collector, did_you_mean
from .ops import OpDef, registry, snake
from .source import Node
from .spec import NODE_KEYS, BlockDecl, NodeDecl, Ref

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REF = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\.([0-9]{1,6}))?")
MAX_NAME = 64
# attributes of nn.Module that a submodule name would shadow
RESERVED = {"forward", "training", "eval", "train", "to", "cuda", "cpu", "parameters", "buffers", "modules",
            "children", "state_dict", "apply", "zero_grad", "half", "float", "double", "type", "register_buffer",
            "code", "graph", "self"}


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


def check_layers(node: Node, inputs: tuple[str, ...], blocks: dict[str, BlockDecl], c: Collector,
            where: str) -> tuple[NodeDecl, ...]:
    if not node.is_seq or not node.value:
        c.error(node.loc, f"'layers' of {where} must be a non-empty list of nodes", "layers: [{op: Linear, out_features: 8}]")
        return ()
    ops = registry()
    entries = [_entry(n, c) for n in node.value]
    # explicit names first, so derived names never take a name written further down
    taken = set(inputs)
    for e in entries:
        if e is not None and e.get("name") is not None:
            n = e["name"]
            if not isinstance(n.value, str):
                continue  # reported by _node
            if n.value in taken and ident(n, "node", c):
                first = "an input" if n.value in inputs else "an earlier node"
                c.error(n.loc, f"node name '{n.value}' is already used by {first}", "give each node its own name")
            elif isinstance(n.value, str):
                taken.add(n.value)
    counts: dict[str, int] = {}
    defined: list[str] = list(inputs)
    out: list[NodeDecl] = []
    for i, (raw, e) in enumerate(zip(node.value, entries)):
        if e is None:
            continue
        decl = _node(raw, e, i, inputs, defined, taken, counts, ops, blocks, c)
        if decl is not None:
            out.append(decl)
            defined.append(decl.name)
        else:
            name = e.get("name")
            if name is not None and isinstance(name.value, str):
                defined.append(name.value)
    return tuple(out)


def _entry(n: Node, c: Collector) -> dict[str, Node] | None:
    """A node entry as a key -> Node mapping: `ReLU` becomes {op: ReLU}."""
    if isinstance(n.value, str):
        return {"op": n}
    if n.is_map:
        return dict(n.value)
    c.error(n.loc, f"a node is an op name or a mapping, not {n.plain()!r}", "write - ReLU or - {op: Linear, out_features: 8}")
    return None


def _node(raw: Node, e: dict[str, Node], index: int, inputs: tuple[str, ...], defined: list[str], taken: set[str],
          counts: dict[str, int], ops: dict[str, OpDef], blocks: dict[str, BlockDecl],
          c: Collector) -> NodeDecl | None:
    before = len(c.diagnostics)
    op_n, block_n = e.get("op"), e.get("block")
    op: OpDef | None = None
    block: str | None = None
    if op_n is not None and block_n is not None:
        c.error(block_n.loc, "a node has either 'op' or 'block', not both", "split it into two nodes")
        return None
    if op_n is None and block_n is None:
        c.error(raw.loc, "node has no 'op' or 'block'", "add op: Linear (or block: NAME)")
        return None
    if op_n is not None:
        if not isinstance(op_n.value, str):
            c.error(op_n.loc, f"op must be a name, not {op_n.plain()!r}", "write op: Linear")
            return None
        if op_n.value in blocks and op_n.value not in ops:
            block_n, op_n = op_n, None  # `- encoder` names a block with no params
        elif op_n.value not in ops:
            hint = did_you_mean(op_n.value, list(ops) + sorted(blocks))
            if "." in op_n.value:
                hint = "ops are names from the registry (see `specc ops`); import paths are never resolved"
            c.error(op_n.loc, f"unknown op '{op_n.value}'", hint or "see `specc ops` for the list")
            return None
        else:
            op = ops[op_n.value]
    if block_n is not None:
        if not isinstance(block_n.value, str) or block_n.value not in blocks:
            c.error(block_n.loc, f"unknown block {block_n.plain()!r}", did_you_mean(str(block_n.value), blocks, "block")
                    or "define it under blocks:")
            return None
        block = block_n.value
    # name
    name_n = e.get("name")
    if name_n is not None:
        if not ident(name_n, "node", c):
            return None
        name, derived = name_n.value, False
        if name in RESERVED:
            c.error(name_n.loc, f"node name '{name}' is reserved by torch.nn.Module", "rename the node")
    else:
        base = snake(op.name) if op is not None else str(block)
        k = counts.get(base, 0)
        name = base if k == 0 else f"{base}_{k}"
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        counts[base] = k + 1
        taken.add(name)
        derived = True
    # refs
    n_diag = len(c.diagnostics)
    refs = _from(e.get("from"), defined, taken, c)
    refs_ok = len(c.diagnostics) == n_diag
    if refs is None and e.get("from") is None:
        if index == 0 and len(inputs) > 1 and not (op is not None and op.inputs[0] == 0):
            c.error(raw.loc, f"the first node must say which input it reads: {', '.join(inputs)}",
                    f"add from: {inputs[0]}")
    n_refs = 1 if refs is None else len(refs)
    # repeat
    repeat = e.get("repeat")
    args = {k: v for k, v in e.items() if k not in NODE_KEYS}
    arg_locs = raw.key_locs if raw.is_map else {}
    if op is not None:
        lo, hi = op.inputs
        if refs_ok and (n_refs < lo or (hi != -1 and n_refs > hi)):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi != -1 else f"at least {lo}"
            loc = e["from"].loc if "from" in e else raw.loc
            c.error(loc, f"{op.name} takes {want} input{'s' if hi != 1 else ''}, got {n_refs}",
                    "list the inputs in from: [a, b]" if n_refs < lo else "remove refs from from:")
        misspelled = set()
        for k in args:
            if k not in op.args:
                hint = did_you_mean(k, op.args, "argument")
                if hint.startswith("did you mean"):
                    misspelled.add(hint.split("'")[1])
                if k in ("device", "dtype"):
                    hint = "devices and dtypes are chosen by specc train, not per node"
                c.error(arg_locs.get(k, raw.loc), f"unknown argument '{k}' for {op.name}", hint)
        for a in op.args.values():
            if a.required and a.name not in args and not (op.infer and op.infer.arg == a.name):
                if a.name != "other" and a.name not in misspelled:
                    c.error(raw.loc, f"{op.name} needs argument '{a.name}'", f"add {a.name}: ...")
        if refs_ok and "other" in op.args and op.inputs == (1, 2):
            if n_refs == 1 and "other" not in args:
                c.error(raw.loc, f"{op.name} with one input needs 'other'", "add other: 2.0, or from: [a, b]")
            if n_refs == 2 and "other" in args:
                c.error(arg_locs.get("other", raw.loc), f"{op.name} has two inputs; 'other' would be a third",
                        "drop other:, or give one ref in from:")
    elif block is not None:
        _block_call(blocks[block], args, arg_locs, raw, n_refs if refs_ok else len(blocks[block].inputs), e, c)
    if len(c.diagnostics) > before:
        return None
    return NodeDecl(name, derived, op.name if op else None, block, refs, repeat, args, raw.loc)


def _block_call(b: BlockDecl, args: dict[str, Node], arg_locs: dict, raw: Node, n_refs: int, e: dict,
                c: Collector) -> None:
    for k in args:
        if k not in b.params:
            c.error(arg_locs.get(k, raw.loc), f"block '{b.name}' has no param '{k}'",
                    did_you_mean(k, b.params, "param") or "declare it under the block's params:")
    for p, default in b.params.items():
        if default is None and p not in args:
            c.error(raw.loc, f"block '{b.name}' needs param '{p}'", f"add {p}: ... to this node")
    if n_refs != len(b.inputs):
        loc = e["from"].loc if "from" in e else raw.loc
        c.error(loc, f"block '{b.name}' takes {len(b.inputs)} input{'s' if len(b.inputs) != 1 else ''} "
                f"({', '.join(b.inputs)}), got {n_refs}", "list one ref per block input in from:")


def _refs(items: list[Node], defined: list[str] | set[str], later: set[str], what: str,
          c: Collector) -> list[Ref]:
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


def _from(node: Node | None, defined: list[str], later: set[str], c: Collector) -> tuple[Ref, ...] | None:
    if node is None:
        return None
    items = node.value if node.is_seq else [node]
    if not items:
        c.error(node.loc, "'from' is empty", "name the node or input this node reads")
        return ()
    return tuple(_refs(items, defined, later, "ref", c))


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
    items = node.value if node.is_seq else [node]
    if not items:
        c.error(node.loc, "'outputs' is empty", "list the refs to return, or drop outputs: for the last node")
        return None
    refs = _refs(items, defined, set(), "output ref", c)
    if len({str(r) for r in refs}) != len(refs):
        c.error(node.loc, "outputs list the same ref twice", "list each output once")
    return tuple(refs)
