"""The resolved graph: what `resolve` produces and every later stage reads.

`Graph.nodes` is the flat list that runs, in order. `Graph.root` keeps the nesting (blocks,
groups, repeats) for eject and the graph picture. Every node keeps its module path (its
state_dict prefix, such as `layers.2.attn.q`) and the YAML location it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from .errors import Loc
from .ops import OpDef
from .spec import InputDecl


@dataclass(frozen=True)
class Val:
    """A value in the graph: the output of `node` (a graph node path or an input name), or element `index`."""

    node: str
    index: int | None = None


@dataclass(frozen=True)
class Tie:
    """`param` of this node's module *is* the tensor at state_dict key `key` of another node."""

    param: str
    key: str
    node: str  # the path of the node that owns it
    loc: Loc  # where the key is written
    param_loc: Loc | None = None  # where the parameter's name is written


@dataclass
class GNode:
    path: str
    op: OpDef
    args: dict[str, Any]
    inputs: list[Val | None]  # by input slot; None: an optional slot left empty
    loc: Loc
    arg_locs: dict[str, Loc] = field(default_factory=dict)
    ref_locs: list[Loc | None] = field(default_factory=list)  # where each input's ref was written
    scope_inputs: list[Val] = field(default_factory=list)  # the enclosing block's inputs: where sizes come from
    ties: list[Tie] = field(default_factory=list)
    inits: dict[str, tuple[Any, Loc]] = field(default_factory=dict)  # module parameter -> (init, where written)
    trainable: bool = True  # False: `trainable: false` here or on an enclosing node freezes its parameters

    @property
    def n_outputs(self) -> int | None:
        return self.op.n_outputs(self.args, len(self.given))

    @property
    def given(self) -> list[Val]:
        return [v for v in self.inputs if v is not None]


Env = dict[str, Union[Val, list, None]]  # None: the node failed; its dependents are skipped


@dataclass
class Item:
    """One spec node inside a scope: its copies (one unless repeated), each a graph node or a scope."""

    name: str
    kind: str  # "op" | "block" | "group"
    repeat: int  # 0: no repeat key
    inputs: list[Val | None]
    keys: list[str] = field(default_factory=list)  # each copy's attribute name in its parent module
    nodes: list[GNode] = field(default_factory=list)
    scopes: list["Scope"] = field(default_factory=list)
    output: Any = None  # Val, or a list of Vals for several outputs


@dataclass
class Scope:
    """A body of nodes: the spec's top level, a block instance or an inline group."""

    kind: str  # "top" | "block" | "group"
    block: str | None  # the block's name, or the group's node name
    path: str
    numbered: bool
    input_names: list[str]
    inputs: list[Val]
    items: list[Item] = field(default_factory=list)
    outputs: list[Val] = field(default_factory=list)


@dataclass
class Graph:
    name: str
    inputs: dict[str, InputDecl]
    nodes: list[GNode]
    outputs: list[tuple[str, Val]]  # (output name, value)
    root: Scope | None = None

    def node(self, path: str) -> GNode:
        return self._index[path]

    def __post_init__(self) -> None:
        self._index = {n.path: n for n in self.nodes}
