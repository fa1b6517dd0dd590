"""Seeded inputs at every combination of symbolic dim sizes, and dynamic-shape specs for exporters."""
from __future__ import annotations

import itertools
from typing import Any, Mapping

import torch

from compiler.shapes import DTYPES
from compiler.spec import InputDecl

DEFAULT_SIZES = {"batch": [1, 3, 32]}
OTHER_SIZES = [2, 5, 17]  # small, odd and larger; primes catch baked-in constants
EXAMPLE = 2  # trace size: not 0 or 1, which exporters specialise on


def symbols(inputs: Mapping[str, InputDecl]) -> list[str]:
    return list(dict.fromkeys(d for i in inputs.values() for d in i.shape if isinstance(d, str)))


def size_grid(inputs: Mapping[str, InputDecl], dims: Mapping[str, list[int]] | None) -> list[dict[str, int]]:
    """Every combination of the sizes to check, one dict per combination."""
    syms = symbols(inputs)
    dims = dict(dims or {})
    lists = [dims.get(s) or DEFAULT_SIZES.get(s) or OTHER_SIZES for s in syms]
    return [dict(zip(syms, combo)) for combo in itertools.product(*lists)] or [{}]


def make_inputs(inputs: Mapping[str, InputDecl], sizes: Mapping[str, int], seed: int = 0) -> list[torch.Tensor]:
    """Seeded: floats from N(0, 1), integers uniformly from their `range`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for inp in inputs.values():
        shape = [sizes.get(d, EXAMPLE) if isinstance(d, str) else d for d in inp.shape]
        dtype = DTYPES[inp.dtype]
        if dtype.is_floating_point:
            out.append(torch.randn(*shape, generator=g).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=g).bool())
        else:
            lo, hi = inp.range or (0, 2)
            out.append(torch.randint(int(lo), int(hi), shape, generator=g, dtype=dtype))
    return out


def example_inputs(inputs: Mapping[str, InputDecl], seed: int = 0) -> list[torch.Tensor]:
    return make_inputs(inputs, {s: EXAMPLE for s in symbols(inputs)}, seed)


def torch_dynamic_shapes(inputs: Mapping[str, InputDecl]) -> dict[str, dict[int, Any]]:
    """For torch.export and the dynamo ONNX exporter: one shared `Dim` per symbol."""
    dims = {s: torch.export.Dim(s, min=1, max=2**20) for s in symbols(inputs)}
    return {name: {i: dims[d] for i, d in enumerate(inp.shape) if isinstance(d, str)} for name, inp in inputs.items()}


def dynamic_axes(inputs: Mapping[str, InputDecl], outputs: Mapping[str, tuple]) -> dict[str, dict[int, str]]:
    """For the legacy ONNX exporter: axis names for inputs and (where known) outputs."""
    axes = {name: {i: d for i, d in enumerate(inp.shape) if isinstance(d, str)} for name, inp in inputs.items()}
    for name, shape in outputs.items():
        named = {i: d for i, d in enumerate(shape) if isinstance(d, str) and d.isidentifier()}
        if named:
            axes[name] = named
    return axes
