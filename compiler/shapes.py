"""Shape inference before any weight exists, on the `meta` device.

Each node is run twice on meta tensors, once per sample of the symbolic dims (see `sampling`),
through its op's calling convention: the same `bind` that lowering and eject use. Modules are
built on `meta`, so no parameter memory is allocated, and the parameter bytes are known before
anything real is created.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Mapping

import torch

from .errors import Collector, SpecError, first_line
from .graph import GNode, Graph, Val
from .sampling import Sampler
from .spec import DimDecl
from .typed import (DTYPES, NodeInfo, ShapeError, TypedGraph, dim_source, fmt_shape, render_shape,  # noqa: F401
                    run_call, value_shape)

class IncrementalShapes:
    """Shape inference that follows `resolve` as it appends graph nodes, so that `shape(x)` in an
    expression can read the sizes of a node made a moment before. `nodes` and `index` are the
    resolver's own (growing) list and path index."""

    def __init__(self, inputs: Mapping[str, Any], nodes: list[GNode], index: dict[str, GNode],
                 dims: Mapping[str, DimDecl]):
        graph = Graph("partial", dict(inputs), nodes, [])
        graph._index = index
        symbols = list(dict.fromkeys(d for i in inputs.values() for d in i.shape if isinstance(d, str)))
        self.run = _Pass(graph, Sampler(symbols, dict(dims)))
        self.run.inputs()
        self.done = 0

    def shape(self, v: Val) -> Any:
        """The shape of `v` (dims: ints and symbolic strings), or None if inference failed on the way."""
        nodes = self.run.graph.nodes
        while self.done < len(nodes):
            self.run.one(nodes[self.done])
            self.done += 1
        return value_shape(self.run.info, v) if v.node in self.run.info else None

    def diagnostics(self) -> list:
        return list(self.run.c.diagnostics)


def infer_shapes(graph: Graph, dims: Mapping[str, DimDecl] | None = None, collect: Collector | None = None) -> TypedGraph:
    """Run every node on meta tensors; raise one `SpecError` listing every shape error found (or,
    with `collect`, add them there and return what was inferred)."""
    symbols = list(dict.fromkeys(d for i in graph.inputs.values() for d in i.shape if isinstance(d, str)))
    dims = dict(dims or {})
    sampler = Sampler(symbols, dims)
    run = _Pass(graph, sampler)
    run.memo = graph.shape_memo  # same samples as the pass that answered shape() while resolving
    info = run.all()
    if run.c.diagnostics:
        if run.only_b:  # sizes of a failure seen in one run only: take them from runs B and C
            retry = _Pass(graph, sampler.shifted())
            retry.all()
            better = {(d.line, d.col): d for d in retry.c.diagnostics}
            run.c.diagnostics = [better.get((d.line, d.col), d) if i in run.only_b else d
                                 for i, d in enumerate(run.c.diagnostics)]
        _divisibility_hint(graph, symbols, dims, run)
        if collect is not None:
            collect.diagnostics.extend(run.c.diagnostics)
        else:
            run.c.raise_if_any()
    return TypedGraph(graph, info, symbols, {s: dims.get(s, DimDecl(s)) for s in symbols})


class _Pass:
    """One inference over the graph with a given sampler; errors go to `c`."""

    def __init__(self, graph: Graph, sampler: Sampler):
        from .infer import NodeRunner
        self.graph, self.sampler, self.c = graph, sampler, Collector()
        self.env_a: dict[str, Any] = {}
        self.env_b: dict[str, Any] = {}
        self.info: dict[str, NodeInfo] = {}
        self.modules: dict[str, Any] = {}  # meta modules by path, for ties
        self.memo: dict[Any, tuple] = {}  # repeated blocks meet the same op, arguments and shapes many times
        self.runner = NodeRunner(self)
        self.failed_at: GNode | None = None
        self.only_b: set[int] = set()  # indexes of diagnostics whose failure showed in run B only
        self.seen: dict[tuple, int] = {}  # a failure's cause -> the index of its diagnostic

    def all(self) -> dict[str, NodeInfo]:
        self.inputs()
        for node in self.graph.nodes:
            self.one(node)
        return self.info

    def inputs(self) -> None:
        for name, inp in self.graph.inputs.items():
            dtype = DTYPES[inp.dtype]
            try:
                a, b = (torch.empty(*[sample.get(d, d) for d in inp.shape], dtype=dtype, device="meta")
                        for sample in (self.sampler.a, self.sampler.b))
                self.env_a[name], self.env_b[name] = a, b
            except (RuntimeError, ValueError, OverflowError) as e:
                self.c.error(inp.loc, f"input '{name}' cannot be created: {first_line(e)}", "use smaller dims")
                continue
            self.info[name] = NodeInfo(tuple(inp.shape))

    def one(self, node: GNode) -> None:
        try:
            self.runner.run(node)
        except ShapeError as e:
            cause = (node.op.name, e.message.partition(" cannot take input ")[2], e.hint)
            if cause[1] and cause in self.seen:  # one cause (a bad n_head) fails q, k and v alike: reported once
                first = self.c.diagnostics[self.seen[cause]]
                also = f"'{node.path}' at line {node.loc.line}" if node.loc else f"'{node.path}'"
                more = "; the same for " if "; the same for " not in first.hint else ", "
                self.c.diagnostics[self.seen[cause]] = replace(first, hint=first.hint + more + also)
                return
            if e.only_b:
                self.only_b.add(len(self.c.diagnostics))
            if cause[1]:
                self.seen[cause] = len(self.c.diagnostics)
            self.c.error(e.loc or node.loc, e.message, e.hint)
            self.failed_at = self.failed_at or node

    def get(self, env: dict, v: Val | None, node: GNode, slot: int) -> Any:
        if v is None:
            return None
        x = env.get(v.node)
        if x is None or v.index is None:
            return x
        if not isinstance(x, (tuple, list)) or v.index >= len(x):
            n = len(x) if isinstance(x, (tuple, list)) else 1
            loc = node.ref_locs[slot] if slot < len(node.ref_locs) else node.loc
            raise ShapeError(f"'{v.node}' returns {n} value{'s' if n != 1 else ''} here; there is no element "
                             f"{v.index}", f"use {v.node}.0 … {v.node}.{n - 1}" if n > 1 else "drop the index",
                             loc)
        if x[v.index] is None:
            loc = node.ref_locs[slot] if slot < len(node.ref_locs) else node.loc
            producer = self.graph._index.get(v.node)
            hint = "set need_weights: true to get the attention weights" if producer is not None and \
                producer.op.name == "MultiheadAttention" else "use another element"
            raise ShapeError(f"element {v.index} of '{v.node}' is None here, not a tensor", hint, loc)
        return x[v.index]

    def shape_of(self, v: Val) -> Any:
        return value_shape(self.info, v)


def _divisibility_hint(graph: Graph, symbols: list[str], dims: dict[str, DimDecl], run: _Pass) -> None:
    """When a shape error involves symbolic dims, find the divisibility that would make it pass
    (retrying with sizes that are multiples of 2, 4, ... 64), and which dims need it, and say so in
    the first error's hint."""
    if run.failed_at is None or not symbols:
        return
    order = {n.path: i for i, n in enumerate(graph.nodes)}

    def passes(scale: dict[str, int]) -> bool:
        trial = _Pass(graph, Sampler(symbols, dims, scale))
        trial.all()
        return trial.failed_at is None or order[trial.failed_at.path] > order[run.failed_at.path]

    for k in (2, 4, 8, 16, 32, 64):
        if not passes({s: k for s in symbols}):
            continue
        need = [s for s in symbols if not passes({o: k for o in symbols if o != s})] or symbols[:1]
        d = run.c.diagnostics[0]
        sizes = {s: k * (dims[s].divisible_by if s in dims else 1) for s in need}
        which = " and ".join(f"{s}" for s in need)
        decl = ", ".join(f"{s}: {{divisible_by: {n}}}" for s, n in sizes.items())
        hint = f"{which} must be divisible by {max(sizes.values())} here: declare it with dims: {{{decl}}}"
        run.c.diagnostics[0] = type(d)(d.file, d.line, d.col, d.message, hint, d.snippet)
        return


def memory_limit() -> int:
    """Bytes of parameters we accept: SPECC_MAX_PARAM_BYTES, else half of the physical memory."""
    env = os.environ.get("SPECC_MAX_PARAM_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} PB"


def guard_size(typed: TypedGraph) -> None:
    """Refuse a spec whose weights would not fit, before any of them is allocated."""
    limit = memory_limit()
    total = typed.bytes
    if total <= limit:
        return
    biggest = max(typed.graph.nodes, key=lambda n: typed.info.get(n.path, NodeInfo(())).bytes)
    raise SpecError.at(biggest.loc, f"the model's weights need {human_bytes(total)}, more than the "
                       f"{human_bytes(limit)} allowed ({typed.info[biggest.path].params:,} parameters in "
                       f"'{biggest.path}' alone)", "shrink the layers, or raise SPECC_MAX_PARAM_BYTES")
