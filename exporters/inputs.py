"""Seeded inputs at every combination of symbolic dim sizes, and dynamic-shape specs for exporters.

Sizes respect the spec's `dims:` constraints (`time: {divisible_by: 4, min: 8}`): the trace example,
every size checked and the range torch.export is told about all stay inside what the spec allows.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping

import torch

from compiler.shapes import DTYPES
from compiler.spec import DimDecl, InputDecl

DEFAULT_SIZES = {"batch": [1, 3, 32]}
OTHER_SIZES = [2, 5, 17]  # small, odd and larger; primes catch baked-in constants
EXAMPLE = 2  # trace size: not 0 or 1, which exporters specialise on
MAX_SIZE = 2**20

Dims = Mapping[str, DimDecl]


def symbols(inputs: Mapping[str, InputDecl]) -> list[str]:
    return list(dict.fromkeys(d for i in inputs.values() for d in i.shape if isinstance(d, str)))


def allowed(size: int, decl: DimDecl | None) -> int | None:
    """The smallest size >= `size` that the dim's constraints allow (None: none does)."""
    if decl is None:
        return size
    k = decl.divisible_by
    s = max(size, decl.min)
    s = -(-s // k) * k
    return s if decl.max is None or s <= decl.max else None


def example_size(decl: DimDecl | None) -> int:
    size = allowed(EXAMPLE, decl)
    if size is None:  # only sizes below 2 are allowed: the largest one
        return decl.max  # type: ignore[union-attr]
    return size


def _sizes(symbol: str, given: list[int] | None, decl: DimDecl | None) -> list[int]:
    if given:
        return list(given)  # the spec's export.dims are taken as written
    sizes = [allowed(s, decl) for s in DEFAULT_SIZES.get(symbol, OTHER_SIZES)]
    if decl is not None and decl.max is not None and None in sizes:
        sizes.append(decl.max)
    return list(dict.fromkeys(s for s in sizes if s is not None)) or [example_size(decl)]


def size_grid(inputs: Mapping[str, InputDecl], dims: Mapping[str, list[int]] | None,
              decls: Dims | None = None) -> list[dict[str, int]]:
    """Every combination of the sizes to check, one dict per combination."""
    syms = symbols(inputs)
    dims, decls = dict(dims or {}), dict(decls or {})
    lists = [_sizes(s, dims.get(s), decls.get(s)) for s in syms]
    return [dict(zip(syms, combo)) for combo in itertools.product(*lists)] or [{}]


def corners(grid: list[dict[str, int]]) -> list[dict[str, int]]:
    """Every dim at its smallest size, and every dim at its largest (the latency points)."""
    if not grid or not grid[0]:
        return grid[:1]
    lo = {k: min(g[k] for g in grid) for k in grid[0]}
    hi = {k: max(g[k] for g in grid) for k in grid[0]}
    return [lo] if lo == hi else [lo, hi]


def make_inputs(inputs: Mapping[str, InputDecl], sizes: Mapping[str, int], seed: int = 0) -> list[torch.Tensor]:
    """Seeded: floats from N(0, 1), integers uniformly from their `range`, bools (masks) at random
    but with the first position of the last dim False, so no attention row is masked entirely
    (its softmax is undefined: NaN in torch, a uniform average in some runtimes)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for inp in inputs.values():
        shape = [sizes.get(d, EXAMPLE) if isinstance(d, str) else d for d in inp.shape]
        dtype = DTYPES[inp.dtype]
        if dtype.is_floating_point:
            out.append(torch.randn(*shape, generator=g).to(dtype))
        elif dtype == torch.bool:
            mask = torch.randint(0, 2, shape, generator=g).bool()
            if mask.dim():
                mask[..., 0] = False
            out.append(mask)
        else:
            lo, hi = inp.range or (0, 2)
            out.append(torch.randint(int(lo), int(hi), shape, generator=g, dtype=dtype))
    return out


def example_sizes(inputs: Mapping[str, InputDecl], dims: Mapping[str, list[int]] | None = None,
                  decls: Dims | None = None) -> dict[str, int]:
    """The trace example's size of each symbol: the smallest size from 2 up that the spec's
    `export.dims` checks (a size the model is known to take: a ResNet's height is not 2), else 2,
    or the smallest size the dim's constraints allow. Never 0 or 1, which exporters specialise on."""
    dims, decls = dims or {}, decls or {}
    out = {}
    for s in symbols(inputs):
        given = sorted(dims.get(s) or [])
        out[s] = next((g for g in given if g >= EXAMPLE), given[-1]) if given else example_size(decls.get(s))
    return out


def example_inputs(inputs: Mapping[str, InputDecl], seed: int = 0, decls: Dims | None = None,
                   dims: Mapping[str, list[int]] | None = None) -> list[torch.Tensor]:
    return make_inputs(inputs, example_sizes(inputs, dims, decls), seed)


def torch_dynamic_shapes(inputs: Mapping[str, InputDecl], decls: Dims | None = None) -> dict[str, dict[int, Any]]:
    """For torch.export and the dynamo ONNX exporter: one shared `Dim` per symbol, with the spec's
    range, and `k * Dim` for a dim declared divisible by k."""
    decls = decls or {}
    dims = {s: _dim(s, decls.get(s)) for s in symbols(inputs)}
    return {name: {i: dims[d] for i, d in enumerate(inp.shape) if isinstance(d, str)} for name, inp in inputs.items()}


def _dim(symbol: str, decl: DimDecl | None) -> Any:
    lo, hi = (decl.min, decl.max or MAX_SIZE) if decl is not None else (1, MAX_SIZE)
    k = decl.divisible_by if decl is not None else 1
    if k == 1:
        return torch.export.Dim(symbol, min=lo, max=hi)
    return k * torch.export.Dim(f"{symbol}_over_{k}", min=max(1, -(-lo // k)), max=max(1, hi // k))


def dynamic_axes(inputs: Mapping[str, InputDecl], outputs: Mapping[str, tuple]) -> dict[str, dict[int, str]]:
    """For the legacy ONNX exporter: axis names for inputs and (where known) outputs."""
    axes = {name: {i: d for i, d in enumerate(inp.shape) if isinstance(d, str)} for name, inp in inputs.items()}
    for name, shape in outputs.items():
        named = {i: d for i, d in enumerate(shape) if isinstance(d, str) and d != "?"}
        if named:
            axes[name] = named
    return axes
