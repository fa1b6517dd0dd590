"""The typed spec: what `check` produces from the located YAML tree.

Node arguments stay located YAML (`Node`) because inside a block, a group or a repeat they depend
on params and on the repeat index; `resolve` evaluates them once per instance. The `train:` and
`export:` sections are typed here too, checked with the rest of the spec.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Loc
from .source import Node

if TYPE_CHECKING:
    from .export_section import ExportConfig
    from .hf_section import HFSection
    from .train_section import TrainConfig

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
TOP_KEYS = ("specc", "name", "description", "params", "inputs", "dims", "blocks", "layers", "seq", "outputs", "train",
            "export", "hf")
NODE_KEYS = ("op", "block", "name", "from", "repeat", "names", "when", "tie", "seq", "layers", "outputs", "trainable")
BLOCK_KEYS = ("params", "inputs", "layers", "seq", "outputs", "description")
DIM_KEYS = ("divisible_by", "min", "max")


@dataclass(frozen=True)
class Ref:
    """`name` or `name.K` (element K of a tuple output)."""

    name: str
    index: int | None
    loc: Loc
    alias: str | None = None  # `outputs: {logits: lm_head}`: the output's name

    def __str__(self) -> str:
        return self.name if self.index is None else f"{self.name}.{self.index}"


@dataclass(frozen=True)
class Body:
    """A list of nodes: `layers:` names its children, `seq:` numbers them like nn.Sequential."""

    numbered: bool
    nodes: tuple["NodeDecl", ...]
    outputs: tuple[Ref, ...] | None
    loc: Loc


@dataclass(frozen=True)
class NodeDecl:
    name: str
    derived: bool  # the name was derived from the op, not written
    op: str | None
    block: str | None
    group: Body | None  # an inline group: `seq:` or `layers:` in the node itself
    refs: tuple[Ref, ...] | None  # None: the previous node
    slots: tuple[str, ...] | None  # `from:` as a mapping: the input slot of each ref
    repeat: Node | None
    names: Node | None  # a repeat's name template, e.g. encoder_layer_{i}
    when: Node | None
    tie: Node | None
    args: dict[str, Node]
    loc: Loc
    inits: Node | None = None  # a module node's `init: {weight: ..., bias: ...}`
    trainable: Node | None = None  # `trainable: false` freezes the parameters of the node and all below it

    @property
    def what(self) -> str:
        return self.op if self.op is not None else f"block {self.block}" if self.block else "group"


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
class DimDecl:
    """What a symbolic dim may be: `height: {divisible_by: 32, min: 32}`."""

    name: str
    divisible_by: int = 1
    min: int = 1
    max: int | None = None
    loc: Loc | None = None

    def allows(self, size: int) -> bool:
        return size >= self.min and size % self.divisible_by == 0 and (self.max is None or size <= self.max)

    def describe(self) -> str:
        parts = [f"divisible by {self.divisible_by}"] if self.divisible_by > 1 else []
        if self.min > 1:
            parts.append(f"at least {self.min}")
        if self.max is not None:
            parts.append(f"at most {self.max}")
        return ", ".join(parts) or "any size"


class _WithBody:
    body: Body

    @property
    def layers(self) -> tuple[NodeDecl, ...]:
        return self.body.nodes

    @property
    def outputs(self) -> tuple[Ref, ...] | None:
        return self.body.outputs


@dataclass(frozen=True)
class BlockDecl(_WithBody):
    name: str
    params: dict[str, Node | None]  # None: required
    inputs: tuple[str, ...]
    body: Body
    loc: Loc


@dataclass(frozen=True)
class Spec(_WithBody):
    name: str
    params: dict[str, Any]  # evaluated
    inputs: dict[str, InputDecl]
    dims: dict[str, DimDecl]  # every symbolic dim of the inputs, declared or not
    blocks: dict[str, BlockDecl]
    body: Body
    train: "TrainConfig | None"
    export: "ExportConfig"
    tree: Node = field(repr=False)  # the located tree with overrides applied
    param_locs: dict[str, Loc] = field(default_factory=dict, repr=False)  # where each param's value was written
    hf: "HFSection | None" = None  # which Hugging Face folders it reads (`hf:`)

    @property
    def seed(self) -> int:
        return self.train.seed if self.train is not None else 0

    def resolved(self) -> dict:
        """The spec as plain data, with params evaluated, overrides applied and data paths absolute
        (a run's `spec.yaml`, which lives in another folder than the spec)."""
        data = self.tree.plain()
        if "params" in data:
            data["params"] = dict(self.params)
        source = self.train.data if self.train is not None else None
        if source is not None and isinstance(source.value, Path):
            data["train"]["data"][source.source] = str(source.value)
        return data

    @cached_property
    def hash(self) -> str:
        """Identifies the resolved spec: a run's spec.yaml and its source agree on it."""
        return _digest(self.resolved())

    @cached_property
    def model_hash(self) -> str:
        """Identifies the model alone (no train, export or description): what a checkpoint must match."""
        return _digest({k: v for k, v in self.resolved().items() if k not in ("train", "export", "description", "hf")})

    @property
    def symbolic_dims(self) -> list[str]:
        return list(self.dims)

    @property
    def file(self) -> str:
        return self.tree.loc.file


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
