"""Check the located tree and build the typed `Spec`, collecting every error of the pass.

This stage knows the whole language: keys, names, refs, ops and their argument names, blocks and
their params, symbolic dims, and the `train:` and `export:` sections. Values that depend on a
block's params or a repeat index are checked by `resolve`. Nothing here imports torch.
"""
from __future__ import annotations

import re
from collections import ChainMap
from typing import Any

from .errors import Collector, Loc, SpecError, did_you_mean
from .export_section import check_export
from .hf_section import check_hf
from .expr import FAILED, MAX_FUNCTIONS, Function, calls, define, eval_string, evaluate, try_evaluate
from .layers import IDENT, MAX_NAME, RESERVED, BodyChecker, check_body, ident
from .ops import REGISTRY
from .source import Node
from .spec import BLOCK_KEYS, DIM_KEYS, DTYPES, TOP_KEYS, BlockDecl, Body, DimDecl, InputDecl, Spec
from .sampling import MAX_SYMBOLS
from .train_section import check_train

SPEC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_BUILTIN_NAMES = ("min", "max", "abs", "round", "floor", "ceil", "sqrt", "int", "float", "len", "shape", "i")


def check(tree: Node) -> Spec:
    """Validate the whole tree; raise one `SpecError` with every problem found."""
    spec, c = check_partial(tree)
    c.raise_if_any()
    return spec


def check_partial(tree: Node) -> tuple[Spec, Collector]:
    """The checked spec and this pass's errors. With errors, the spec holds what checked well (a
    node that failed is left out), so that later passes can still report their own errors."""
    c = Collector()
    if not tree.is_map:
        raise SpecError.at(tree.loc, "a spec must be a mapping", "start the file with 'specc: 1' and 'name: ...'")
    for key, loc in tree.key_locs.items():
        if key not in TOP_KEYS:
            c.error(loc, f"unknown top-level key '{key}'", did_you_mean(key, TOP_KEYS, "key"))
    for key in ("specc", "name", "inputs", "layers"):
        if key not in tree.value and not (key == "layers" and "seq" in tree.value):
            c.error(tree.loc, f"missing required key '{key}'", _REQUIRED_HINTS[key])
    _version(tree.get("specc"), c)
    name = _spec_name(tree.get("name"), c)
    params: dict[str, Any] = {}
    broken: set[str] = set()
    functions = _functions(tree.get("functions"), params, broken, c)
    _params(tree.get("params"), params, functions, broken, c)
    scope = {**functions, **params}
    inputs = _inputs(tree.get("inputs"), scope, c)
    dims = _dims(tree.get("dims"), inputs, scope, c)
    blocks = _blocks(tree.get("blocks"), c)
    body = _top_body(tree, inputs, blocks, c)
    train = check_train(tree.get("train"), scope, tree.loc.file, c)
    export = check_export(tree.get("export"), scope, list(dims), c)
    pnode = tree.get("params")
    hf = check_hf(tree.get("hf"), list(pnode.value) if pnode is not None and pnode.is_map else [], c)
    _recursion(blocks, c)
    param_locs = {k: v.loc for k, v in pnode.value.items()} if pnode is not None and pnode.is_map else {}
    return Spec(name, params, inputs, dims, blocks, body, train, export, tree, param_locs, functions, hf), c


def _top_body(tree: Node, inputs: dict, blocks: dict[str, BlockDecl], c: Collector) -> Body:
    """`layers:` (children by name) or `seq:` (numbered, like an nn.Sequential model)."""
    numbered = tree.get("seq") is not None
    if numbered and tree.get("layers") is not None:
        c.error(tree.key_locs["seq"], "a spec has layers: or seq:, not both", "keep one: seq numbers its nodes")
    nodes = tree.get("seq") if numbered else tree.get("layers")
    if nodes is None:
        return Body(False, (), None, tree.loc)
    return check_body(nodes, numbered, tuple(inputs), BodyChecker(blocks, c), "the spec", tree.get("outputs"))


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


def _key_ident(name: str, loc: Loc, what: str, c: Collector) -> bool:
    return ident(Node(name, loc), what, c)


def _functions(node: Node | None, params: dict[str, Any], broken: set[str], c: Collector) -> dict[str, Function]:
    """`functions: {"ch(c)": "${...}"}`: each reads the params and the functions above it. The names
    of those that can never be called go to `broken` (what uses them is not evaluated)."""
    if node is None:
        return {}
    if not node.is_map:
        c.error(node.loc, "'functions' maps signatures to expressions", 'functions: {"half(x)": "${x // 2}"}')
        return {}
    out: dict[str, Function] = {}
    for signature, body in node.value.items():
        loc = node.key_locs[signature]
        if len(out) == MAX_FUNCTIONS:
            c.error(loc, f"a spec defines at most {MAX_FUNCTIONS} functions", "merge some of them")
            break
        try:
            fn = define(signature, body, loc, ChainMap(dict(out), params))
        except SpecError as e:
            c.extend(e)
            continue
        if fn.name in out or fn.name in _BUILTIN_NAMES:
            c.error(loc, f"function '{fn.name}' is already defined", "give it another name")
            continue
        out[fn.name] = fn
    names = list(out)
    for k, fn in enumerate(out.values()):  # a call of itself or of a later function can never resolve
        wrong = next((n for n in calls(fn) if n in names[k:]), None)
        if wrong is not None:
            what = "itself" if wrong == fn.name else f"'{wrong}', which is defined below it"
            c.error(fn.loc, f"function '{fn.name}' calls {what}: functions do not recurse",
                    "a function calls only the functions defined above it")
            broken.add(fn.name)
    return out


def _params(node: Node | None, out: dict[str, Any], functions: dict[str, Function], failed: set[str],
            c: Collector) -> None:
    """Evaluate the params in order into `out` (which the functions read as it fills)."""
    if node is None:
        return
    if not node.is_map:
        c.error(node.loc, "'params' must be a mapping of names to values", "params: {dim: 64, depth: 4}")
        return
    for key, value in node.value.items():
        if not _key_ident(key, node.key_locs[key], "param", c):
            continue
        if key in functions:
            c.error(node.key_locs[key], f"param '{key}' has the name of a function", "rename one of them")
            continue
        if failed & _names_in(value):  # derived from a param whose error is reported already
            failed.add(key)
            continue
        try:
            out[key] = evaluate(value, ChainMap(out, functions))
        except SpecError as e:
            _blame_override(e, value, node, c)
            failed.add(key)


def _blame_override(e: SpecError, value: Node, params: Node, c: Collector) -> None:
    """A param that fails because of a `--set` value is reported at the override, once (`--set scale=q`
    breaks three params that index `scales` by it), with the spec line that uses it in the hint."""
    sets = [n for n in _names_in(value) if n in params.value and params.value[n].loc.file == "--set"]
    if len(sets) != 1:
        c.extend(e)
        return
    where = params.value[sets[0]].loc
    for d in e.diagnostics:
        if any(o.file == where.file and (o.line, o.col, o.message) == (where.line, where.col, d.message)
               for o in c.diagnostics):
            continue
        c.error(where, d.message, f"'{sets[0]}' is used at {d.file}:{d.line}:{d.col}; {d.hint}")


def _names_in(node: Node) -> set[str]:
    """The identifiers written in a value's `$p` and `${...}` strings (a superset of the params it reads)."""
    if node.is_map or node.is_seq:
        values = node.value.values() if node.is_map else node.value
        return set().union(*(_names_in(v) for v in values))
    return set(re.findall(r"[A-Za-z_]\w*", node.value)) if isinstance(node.value, str) and "$" in node.value else set()


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
        decl = _input(key, value, node.key_locs[key], params, c)
        if decl is not None:
            out[key] = decl
    return out


def _input(key: str, value: Node, loc: Loc, params: dict, c: Collector) -> InputDecl | None:
    shape_node, dtype, rng = value, "float32", None
    if value.is_map:
        for k, kloc in value.key_locs.items():
            if k not in ("shape", "dtype", "range"):
                c.error(kloc, f"unknown input key '{k}'", did_you_mean(k, ("shape", "dtype", "range"), "key"))
        shape_node = value.get("shape")
        if shape_node is None:
            c.error(value.loc, f"input '{key}' has no shape", "write {shape: [batch, 16], dtype: float32}")
            return None
        dtype_node = value.get("dtype")
        if dtype_node is not None:
            dtype = dtype_node.value
            if not isinstance(dtype, str) or dtype not in DTYPES:
                c.error(dtype_node.loc, f"unknown dtype {dtype_node.plain()!r}",
                        did_you_mean(str(dtype_node.plain()), DTYPES, "dtype") or f"dtypes: {', '.join(DTYPES)}")
                dtype = "float32"
        rng = _range(value.get("range"), params, c)
    shape = _shape(shape_node, params, c)
    if shape is None:
        return None
    if dtype.startswith("int") and rng is None:
        c.error(value.loc, f"integer input '{key}' needs a range", "add range: [0, vocab] (high end excluded)")
    return InputDecl(key, shape, dtype, rng, loc)


def _range(node: Node | None, params: dict, c: Collector) -> tuple[float, float] | None:
    if node is None:
        return None
    v = try_evaluate(node, params, c)
    if v is FAILED:
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


def _dims(node: Node | None, inputs: dict[str, InputDecl], params: dict, c: Collector) -> dict[str, DimDecl]:
    """Every symbolic dim of the inputs, with what `dims:` says of it (`divisible_by`, `min`, `max`)."""
    symbols = list(dict.fromkeys(d for i in inputs.values() for d in i.shape if isinstance(d, str)))
    if len(symbols) > MAX_SYMBOLS:
        where = next(i.loc for i in inputs.values() if symbols[MAX_SYMBOLS] in i.shape)
        c.error(where, f"the inputs have {len(symbols)} symbolic dims; specc handles {MAX_SYMBOLS}",
                "make some of them fixed sizes, or share names between inputs")
        symbols = symbols[:MAX_SYMBOLS]
    out = {s: DimDecl(s) for s in symbols}
    if node is None:
        return out
    if not node.is_map:
        c.error(node.loc, "'dims' maps symbolic dims to their constraints", "dims: {height: {divisible_by: 32}}")
        return out
    for name, value in node.value.items():
        loc = node.key_locs[name]
        if name not in out:
            c.error(loc, f"'{name}' is not a symbolic dim of the inputs",
                    did_you_mean(name, symbols, "dim") or "symbolic dims are the names in input shapes")
            continue
        got = try_evaluate(value, params, c)
        if got is FAILED:
            continue
        decl = _dim(name, got, value, loc, c)
        if decl is not None:
            out[name] = decl
    return out


def _dim(name: str, got: Any, node: Node, loc: Loc, c: Collector) -> DimDecl | None:
    if not isinstance(got, dict):
        c.error(node.loc, f"dim '{name}' takes a mapping of constraints", "height: {divisible_by: 32, min: 32}")
        return None
    values = {}
    for k, v in got.items():
        kloc = node.value[k].loc if node.is_map and k in node.value else node.loc  # the value
        if k not in DIM_KEYS:
            c.error(node.key_locs.get(k, kloc) if node.is_map else kloc, f"unknown constraint '{k}' for dim '{name}'",
                    did_you_mean(k, DIM_KEYS, "constraint"))
        elif v is None and k == "max":
            values[k] = None
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            c.error(kloc, f"{k} of dim '{name}' must be a positive integer, got {v!r}", f"{k}: 32")
        else:
            values[k] = v
    decl = DimDecl(name, values.get("divisible_by", 1), values.get("min", 1), values.get("max"), loc)
    if decl.max is not None and decl.max < max(decl.min, decl.divisible_by):
        c.error(loc, f"no size of dim '{name}' is {decl.describe()}", "loosen the constraints")
        return None
    return decl


def _blocks(node: Node | None, c: Collector) -> dict[str, BlockDecl]:
    """Two passes: every block's signature first, so calls between blocks can be checked."""
    if node is None:
        return {}
    if not node.is_map:
        c.error(node.loc, "'blocks' must map block names to definitions", "blocks: {encoder: {inputs: [x], layers: [...]}}")
        return {}
    sigs: dict[str, BlockDecl] = {}
    bodies: dict[str, Node] = {}
    for name, body in node.value.items():
        loc = node.key_locs[name]
        if not _key_ident(name, loc, "block", c):
            continue
        if name in REGISTRY:
            c.error(loc, f"block name '{name}' is already an op", "rename the block")
            continue
        if not body.is_map:
            c.error(body.loc, f"block '{name}' must be a mapping", "give it inputs: and layers:")
            continue
        for k, kloc in body.key_locs.items():
            if k not in BLOCK_KEYS:
                c.error(kloc, f"unknown key '{k}' in block '{name}'", did_you_mean(k, BLOCK_KEYS, "key"))
        sigs[name] = BlockDecl(name, _block_params(body.get("params"), c), _block_inputs(body.get("inputs"), c),
                               Body(False, (), None, loc), loc)
        bodies[name] = body
    out = {}
    for name, body in bodies.items():
        sig = sigs[name]
        numbered = "seq" in body.value
        if numbered and "layers" in body.value:  # reported; the seq: is still checked, so calls are not blamed
            c.error(body.key_locs["seq"], f"block '{name}' has both layers: and seq:", "keep one: seq numbers its nodes")
        nodes = body.get("seq" if numbered else "layers")
        if nodes is None:
            c.error(body.loc, f"block '{name}' has no layers", "add layers: (or seq:) with a list of nodes")
            continue
        checked = check_body(nodes, numbered, sig.inputs, BodyChecker(sigs, c), f"block '{name}'", body.get("outputs"))
        out[name] = BlockDecl(name, sig.params, sig.inputs, checked, sig.loc)
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
    names = [i.value for i in inode.value if ident(i, "input", c)]
    if len(set(names)) != len(names):
        c.error(inode.loc, "block input names must be unique", "give each input its own name: inputs: [x, cos, sin]")
    return tuple(names) or ("x",)


def _uses(body: Body) -> list[tuple[str, Loc]]:
    """Blocks a body calls, inline groups included."""
    out = []
    for n in body.nodes:
        if n.block:
            out.append((n.block, n.loc))
        if n.group is not None:
            out.extend(_uses(n.group))
    return out


def _recursion(blocks: dict[str, BlockDecl], c: Collector) -> None:
    """Refuse a block that uses itself, directly or through others (a depth-first search that
    visits each block once, so a diamond of blocks cannot make it exponential)."""
    uses = {name: _uses(b.body) for name, b in blocks.items()}
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
