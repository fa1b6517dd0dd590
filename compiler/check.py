"""Check the located tree and build the typed `Spec`, collecting every error of the pass.

This stage knows the language's structure: keys, names, refs, ops and their argument names,
blocks and their params. Values that depend on a block's params are checked by `resolve`.
"""
from __future__ import annotations

import keyword
import re
from typing import Any

from .errors import Collector, Loc, SpecError, did_you_mean
from .expr import eval_string
from .source import Node
from .ops import OpDef, registry, snake
from .spec import BLOCK_KEYS, DTYPES, NODE_KEYS, TOP_KEYS, BlockDecl, InputDecl, NodeDecl, Ref, Spec

SPEC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REF = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\.([0-9]{1,6}))?")
MAX_NAME = 64
# attributes of nn.Module that a submodule name would shadow
RESERVED = {"forward", "training", "eval", "train", "to", "cuda", "cpu", "parameters", "buffers", "modules",
            "children", "state_dict", "apply", "zero_grad", "half", "float", "double", "type", "register_buffer",
            "code", "graph", "self"}


def check(tree: Node) -> Spec:
    """Validate the whole tree; raise one `SpecError` with every problem found."""
    c = Collector()
    if not tree.is_map:
        raise SpecError.at(tree.loc, "a spec must be a mapping", "start the file with 'specc: 1' and 'name: ...'")
    for key, loc in tree.key_locs.items():
        if key not in TOP_KEYS:
            c.error(loc, f"unknown top-level key '{key}'", did_you_mean(key, TOP_KEYS, "key"))
    for key in ("specc", "name", "inputs", "layers"):
        if key not in tree.value:
            c.error(tree.loc, f"missing required key '{key}'", _REQUIRED_HINTS[key])
    _version(tree.get("specc"), c)
    name = _spec_name(tree.get("name"), c)
    params = _params(tree.get("params"), c)
    inputs = _inputs(tree.get("inputs"), params, c)
    blocks = _blocks(tree.get("blocks"), c)
    layers: tuple[NodeDecl, ...] = ()
    if tree.get("layers") is not None:
        layers = _layers(tree.get("layers"), tuple(inputs), blocks, c, where="layers")
    outputs = None
    if tree.get("outputs") is not None:
        defined = set(inputs) | {n.name for n in layers}
        outputs = _output_refs(tree.get("outputs"), defined, c)
    for section in ("train", "export"):
        node = tree.get(section)
        if node is not None and not node.is_map:
            c.error(node.loc, f"'{section}' must be a mapping", f"see DESIGN §{3 if section == 'train' else 4}")
    _recursion(blocks, c)
    c.raise_if_any()
    pnode = tree.get("params")
    param_locs = {k: v.loc for k, v in pnode.value.items()} if pnode is not None and pnode.is_map else {}
    return Spec(name, params, inputs, blocks, layers, outputs, tree.get("train"), tree.get("export"), tree, param_locs)


_REQUIRED_HINTS = {
    "specc": "add 'specc: 1' (the format version)",
    "name": "add 'name: my-model'",
    "inputs": "add 'inputs: {x: [batch, 16]}'",
    "layers": "add 'layers:' with a list of nodes",
}


def _version(node: Node | None, c: Collector) -> None:
    if node is not None and (node.value != 1 or isinstance(node.value, bool)):
        c.error(node.loc, f"unsupported spec version {node.value!r}", "this specc reads 'specc: 1'")


def _spec_name(node: Node | None, c: Collector) -> str:
    if node is None:
        return "model"
    if not isinstance(node.value, str) or not SPEC_NAME.fullmatch(node.value) or len(node.value) > MAX_NAME:
        c.error(node.loc, f"invalid name {node.plain()!r}", "a name is letters, digits, '_' and '-', starting "
                "with a letter or '_', at most 64 characters")
        return "model"
    return node.value


def _ident(node: Node, what: str, c: Collector) -> bool:
    v = node.value
    if not isinstance(v, str) or not IDENT.fullmatch(v) or len(v) > MAX_NAME or keyword.iskeyword(v):
        shown = v if isinstance(v, str) else node.plain()
        hint = "use letters, digits and '_', starting with a letter or '_'"
        if isinstance(v, str) and not v.isascii():
            hint = "names must be ASCII; a look-alike letter (such as a Cyrillic 'а') may have slipped in"
        c.error(node.loc, f"invalid {what} name {shown!r}", hint)
        return False
    return True


def _key_ident(name: str, loc: Loc, what: str, c: Collector) -> bool:
    return _ident(Node(name, loc), what, c)


def evaluate(node: Node, scope: dict[str, Any]) -> Any:
    """A located value with `$p` / `${...}` evaluated in `scope`, recursively."""
    if node.is_map:
        return {k: evaluate(v, scope) for k, v in node.value.items()}
    if node.is_seq:
        return [evaluate(v, scope) for v in node.value]
    if isinstance(node.value, str) and "$" in node.value:
        return eval_string(node.value, scope, node.loc)
    return node.value


_FAILED = object()


def try_evaluate(node: Node, scope: dict[str, Any], c: Collector) -> Any:
    """`evaluate`, with its error recorded in `c`; returns `_FAILED` when it failed."""
    try:
        return evaluate(node, scope)
    except SpecError as e:
        c.extend(e)
        return _FAILED


def _params(node: Node | None, c: Collector) -> dict[str, Any]:
    if node is None:
        return {}
    if not node.is_map:
        c.error(node.loc, "'params' must be a mapping of names to values", "params: {dim: 64, depth: 4}")
        return {}
    out: dict[str, Any] = {}
    for key, value in node.value.items():
        if not _key_ident(key, node.key_locs[key], "param", c):
            continue
        try:
            out[key] = evaluate(value, out)
        except SpecError as e:
            c.extend(e)
    return out


def _inputs(node: Node | None, params: dict, c: Collector) -> dict[str, InputDecl]:
    if node is None:
        return {}
    if not node.is_map or not node.value:
        c.error(node.loc, "'inputs' must map input names to shapes", "inputs: {x: [batch, 16]}")
        return {}
    out = {}
    for key, value in node.value.items():
        if not _key_ident(key, node.key_locs[key], "input", c):
            continue
        if key in RESERVED:
            c.error(node.key_locs[key], f"input name '{key}' is reserved", "rename the input")
            continue
        shape_node, dtype, rng = value, "float32", None
        if value.is_map:
            for k, loc in value.key_locs.items():
                if k not in ("shape", "dtype", "range"):
                    c.error(loc, f"unknown input key '{k}'", did_you_mean(k, ("shape", "dtype", "range"), "key"))
            shape_node = value.get("shape")
            if shape_node is None:
                c.error(value.loc, f"input '{key}' has no shape", "write {shape: [batch, 16], dtype: float32}")
                continue
            dtype_node = value.get("dtype")
            if dtype_node is not None:
                dtype = dtype_node.value
                if dtype not in DTYPES:
                    c.error(dtype_node.loc, f"unknown dtype {dtype!r}", did_you_mean(str(dtype), DTYPES, "dtype"))
                    dtype = "float32"
            rng = _range(value.get("range"), params, c)
        shape = _shape(shape_node, params, c)
        if shape is None:
            continue
        if dtype.startswith("int") and rng is None:
            c.error(value.loc, f"integer input '{key}' needs a range", "add range: [0, vocab] (high end excluded)")
        out[key] = InputDecl(key, shape, dtype, rng, node.key_locs[key])
    return out


def _range(node: Node | None, params: dict, c: Collector) -> tuple[float, float] | None:
    if node is None:
        return None
    v = try_evaluate(node, params, c)
    if v is _FAILED:
        return None
    ok = isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    if not ok or not v[0] < v[1]:
        c.error(node.loc, f"invalid range {v!r}", "write range: [low, high] with low < high")
        return None
    return (v[0], v[1])


def _shape(node: Node, params: dict, c: Collector) -> tuple[int | str, ...] | None:
    if not node.is_seq or not node.value:
        c.error(node.loc, "a shape is a non-empty list of sizes", "write [batch, 16] or [batch, $seq, $dim]")
        return None
    dims: list[int | str] = []
    for d in node.value:
        v = d.value
        if isinstance(v, str) and "$" in v:
            try:
                v = eval_string(v, params, d.loc)
            except SpecError as e:
                c.extend(e)
                return None
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            c.error(d.loc, f"invalid dim {d.plain()!r}", "a dim is a positive integer, $param or a symbolic name")
            return None
        if isinstance(v, int):
            if v <= 0:
                c.error(d.loc, f"dim must be positive, got {v}", "use a symbolic name such as 'batch' for a free dim")
                return None
        elif not IDENT.fullmatch(v):
            c.error(d.loc, f"invalid symbolic dim {v!r}", "a symbolic dim is a name such as 'batch' or 'time'")
            return None
        elif v in params and d.value == v:
            c.error(d.loc, f"dim '{v}' is also a param", f"write ${v} to use the param, or rename the symbolic dim")
            return None
        dims.append(v)
    return tuple(dims)


def _blocks(node: Node | None, c: Collector) -> dict[str, BlockDecl]:
    """Two passes: every block's signature first, so calls between blocks can be checked."""
    if node is None:
        return {}
    if not node.is_map:
        c.error(node.loc, "'blocks' must map block names to definitions", "blocks: {encoder: {inputs: [x], layers: [...]}}")
        return {}
    ops = registry()
    sigs: dict[str, BlockDecl] = {}
    bodies: dict[str, Node] = {}
    for name, body in node.value.items():
        loc = node.key_locs[name]
        if not _key_ident(name, loc, "block", c):
            continue
        if name in ops:
            c.error(loc, f"block name '{name}' is already an op", "rename the block")
            continue
        if not body.is_map:
            c.error(body.loc, f"block '{name}' must be a mapping", "give it inputs: and layers:")
            continue
        for k, kloc in body.key_locs.items():
            if k not in BLOCK_KEYS:
                c.error(kloc, f"unknown key '{k}' in block '{name}'", did_you_mean(k, BLOCK_KEYS, "key"))
        sigs[name] = BlockDecl(name, _block_params(body.get("params"), c), _block_inputs(body.get("inputs"), c),
                               (), None, loc)
        bodies[name] = body
    out = {}
    for name, body in bodies.items():
        sig = sigs[name]
        if body.get("layers") is None:
            c.error(body.loc, f"block '{name}' has no layers", "add layers: with a list of nodes")
            continue
        layers = _layers(body.get("layers"), sig.inputs, sigs, c, where=f"block '{name}'")
        outputs = None
        if body.get("outputs") is not None:
            outputs = _output_refs(body.get("outputs"), set(sig.inputs) | {n.name for n in layers}, c)
        out[name] = BlockDecl(name, sig.params, sig.inputs, layers, outputs, sig.loc)
    return out


def _block_params(pnode: Node | None, c: Collector) -> dict[str, Node | None]:
    params: dict[str, Node | None] = {}
    if pnode is None:
        return params
    if not pnode.is_map:
        c.error(pnode.loc, "block params must be a mapping", "params: {dim: null, hidden: 128}")
        return params
    for p, v in pnode.value.items():
        if _key_ident(p, pnode.key_locs[p], "param", c):
            params[p] = None if v.value is None else v
    return params


def _block_inputs(inode: Node | None, c: Collector) -> tuple[str, ...]:
    if inode is None:
        return ("x",)
    if not inode.is_seq or not inode.value:
        c.error(inode.loc, "block inputs must be a non-empty list of names", "inputs: [x]")
        return ("x",)
    names = [i.value for i in inode.value if _ident(i, "input", c)]
    if len(set(names)) != len(names):
        c.error(inode.loc, "block input names must be unique")
    return tuple(names) or ("x",)


def _layers(node: Node, inputs: tuple[str, ...], blocks: dict[str, BlockDecl], c: Collector,
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
            if n.value in taken and _ident(n, "node", c):
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
        if not _ident(name_n, "node", c):
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
                c.error(raw.loc, f"{op.name} with one input needs 'other'", f"add other: 2.0, or from: [a, b]")
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


def _from(node: Node | None, defined: list[str], later: set[str], c: Collector) -> tuple[Ref, ...] | None:
    if node is None:
        return None
    items = node.value if node.is_seq else [node]
    if not items:
        c.error(node.loc, "'from' is empty", "name the node or input this node reads")
        return ()
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
                hint = did_you_mean(ref.name, defined, "name")
                c.error(item.loc, f"unknown ref '{ref.name}'", hint or "refs name an input or an earlier node")
            continue
        refs.append(ref)
    return tuple(refs)


def parse_ref(item: Node, c: Collector) -> Ref | None:
    m = REF.fullmatch(item.value) if isinstance(item.value, str) else None
    if not m:
        hint = "a ref is a node or input name, or name.K for element K"
        if isinstance(item.value, str) and not item.value.isascii():
            hint = "names are ASCII; a look-alike letter (such as a Cyrillic 'х') may have slipped in"
        c.error(item.loc, f"invalid ref {item.plain()!r}", hint)
        return None
    return Ref(m.group(1), None if m.group(2) is None else int(m.group(2)), item.loc)


def _output_refs(node: Node, defined: set[str], c: Collector) -> tuple[Ref, ...] | None:
    items = node.value if node.is_seq else [node]
    if not items:
        c.error(node.loc, "'outputs' is empty", "list the refs to return, or drop outputs: for the last node")
        return None
    refs = []
    for item in items:
        ref = parse_ref(item, c)
        if ref is None:
            continue
        if ref.name not in defined:
            c.error(item.loc, f"unknown output ref '{ref.name}'", did_you_mean(ref.name, defined, "name"))
            continue
        refs.append(ref)
    if len({str(r) for r in refs}) != len(refs):
        c.error(node.loc, "outputs list the same ref twice", "list each output once")
    return tuple(refs)


def _recursion(blocks: dict[str, BlockDecl], c: Collector) -> None:
    """Refuse a block that uses itself, directly or through others (a depth-first search that
    visits each block once, so a diamond of blocks cannot make it exponential)."""
    uses = {name: [(n.block, n.loc) for n in b.layers if n.block] for name, b in blocks.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for child, loc in uses.get(name, []):
            if state.get(child) == 1:
                cycle = path[path.index(child):] + [child]
                c.error(loc, f"block '{child}' uses itself: {' -> '.join(cycle)}", "a block cannot contain itself")
            elif child in uses and child not in state:
                visit(child, path + [child])
        state[name] = 2

    for name in blocks:
        if name not in state:
            visit(name, [name])
