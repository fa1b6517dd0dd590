"""The typed spec: what `check` produces from the located YAML tree.

Node arguments stay located YAML (`Node`) because inside a block they depend on the block's
params; `resolve` evaluates them once per instance.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .errors import Loc
from .source import Node

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
TOP_KEYS = ("specc", "name", "description", "params", "inputs", "blocks", "layers", "outputs", "train", "export")
NODE_KEYS = ("op", "block", "name", "from", "repeat")
BLOCK_KEYS = ("params", "inputs", "layers", "outputs", "description")


@dataclass(frozen=True)
class Ref:
    """`name` or `name.K` (element K of a tuple output)."""

    name: str
    index: int | None
    loc: Loc

    def __str__(self) -> str:
        return self.name if self.index is None else f"{self.name}.{self.index}"


@dataclass(frozen=True)
class NodeDecl:
    name: str
    derived: bool  # the name was derived from the op, not written
    op: str | None
    block: str | None
    refs: tuple[Ref, ...] | None  # None: the previous node
    repeat: Node | None
    args: dict[str, Node]
    loc: Loc

    @property
    def what(self) -> str:
        return self.op if self.op is not None else f"block {self.block}"


@dataclass(frozen=True)
class InputDecl:
    name: str
    shape: tuple[int | str, ...]  # ints and symbolic dim names
    dtype: str
    range: tuple[float, float] | None
    loc: Loc

    def as_dict(self) -> dict:
        d: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if self.range is not None:
            d["range"] = list(self.range)
        return d


@dataclass(frozen=True)
class BlockDecl:
    name: str
    params: dict[str, Node | None]  # None: required
    inputs: tuple[str, ...]
    layers: tuple[NodeDecl, ...]
    outputs: tuple[Ref, ...] | None
    loc: Loc


@dataclass(frozen=True)
class Spec:
    name: str
    params: dict[str, Any]  # evaluated
    inputs: dict[str, InputDecl]
    blocks: dict[str, BlockDecl]
    layers: tuple[NodeDecl, ...]
    outputs: tuple[Ref, ...] | None
    train: Node | None
    export: Node | None
    tree: Node = field(repr=False)  # the located tree with overrides applied
    param_locs: dict[str, Loc] = field(default_factory=dict, repr=False)  # where each param's value was written

    def resolved(self) -> dict:
        """The spec as plain data, with params evaluated and overrides applied: `spec.yaml`."""
        data = self.tree.plain()
        if "params" in data:
            data["params"] = dict(self.params)
        return data

    @cached_property
    def hash(self) -> str:
        """Identifies the resolved spec: a run's spec.yaml and its source agree on it."""
        return _digest(self.resolved())

    @cached_property
    def model_hash(self) -> str:
        """Identifies the model alone (no train, export or description): what a checkpoint must match."""
        return _digest({k: v for k, v in self.resolved().items() if k not in ("train", "export", "description")})

    @property
    def symbolic_dims(self) -> list[str]:
        seen: dict[str, None] = {}
        for inp in self.inputs.values():
            for d in inp.shape:
                if isinstance(d, str):
                    seen[d] = None
        return list(seen)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
