"""Located YAML loading: text -> a tree of `Node`s that each know their `file:line:col`.

We compose the tree from PyYAML's event stream ourselves rather than with its constructor:
- scalars follow the YAML 1.2 core schema (`1e-5` is a float; `on`/`yes` stay strings),
- any tag is refused (no `!!python/object`, not even `!!str`), and duplicate keys are errors,
- alias expansion is counted, so a billion-laughs file is refused after a bounded amount of work,
- nesting depth is bounded, and the composer is iterative, so deep files cannot blow the stack.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Loc, Source, SpecError

MAX_BYTES = 4 * 1024 * 1024  # a spec is a page of text; inline data belongs in csv/npz files
MAX_DEPTH = 64
MAX_VALUES = 200_000  # values after alias expansion
INT_LIMIT = 2**63

_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}


@dataclass(eq=False)
class Node:
    """A located YAML value. `value` is a dict[str, Node], a list[Node] or a plain scalar."""

    value: Any
    loc: Loc
    key_locs: dict[str, Loc] = field(default_factory=dict)  # mappings only: where each key is

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_seq(self) -> bool:
        return isinstance(self.value, list)

    def get(self, key: str) -> "Node | None":
        return self.value.get(key) if self.is_map else None

    def plain(self) -> Any:
        """The value without locations: dicts, lists and scalars."""
        if self.is_map:
            return {k: v.plain() for k, v in self.value.items()}
        if self.is_seq:
            return [v.plain() for v in self.value]
        return self.value


def resolve_scalar(text: str, loc: Loc) -> Any:
    """YAML 1.2 core schema for a plain (unquoted) scalar."""
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.fullmatch(text) or _OCT.fullmatch(text) or _HEX.fullmatch(text):
        value = int(text, 8 if "0o" in text else 16 if "0x" in text else 10) if len(text) < 40 else None
        if value is None or abs(value) >= INT_LIMIT:
            raise SpecError.at(loc, f"integer {text[:30]}{'...' if len(text) > 30 else ''} is out of range",
                               "integers must lie within ±2**63")
        return value
    if _FLOAT.fullmatch(text):
        value = float(text)
        if math.isinf(value):
            raise SpecError.at(loc, f"number {text[:30]} is out of range", "write .inf for infinity")
        return value
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text


def _loc(mark: Any, src: Source) -> Loc:
    return Loc(src.name, mark.line + 1, mark.column + 1, src)


def parse_text(text: str, name: str = "<spec>") -> Node:
    """Parse YAML text into a located `Node` tree; raises `SpecError` on any problem."""
    src = Source(name, text)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise SpecError.at(Loc(name, 1, 1, src), f"spec is {len(text.encode('utf-8', 'surrogatepass')) / 1e6:.1f} MB; "
                           f"the limit is {MAX_BYTES / 1e6:.0f} MB", "put data in a csv or npz file")
    try:
        return _compose(yaml.parse(text, Loader=yaml.SafeLoader), src)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = _loc(mark, src) if mark else Loc(name, 1, 1, src)
        problem = (e.problem or e.context or "invalid YAML").strip()
        raise SpecError.at(loc, f"invalid YAML: {problem}", "check the indentation and quoting on this line") from None
    except yaml.YAMLError as e:  # reader errors: control characters, bad encodings
        line, col = 1, 1
        if getattr(e, "position", None) is not None:
            before = text[: e.position]
            line = before.count("\n") + 1
            col = e.position - (before.rfind("\n") + 1) + 1
        raise SpecError.at(Loc(name, line, col, src), f"invalid YAML: {str(e).splitlines()[0]}",
                           "remove control characters from the file") from None


def load_file(path: str | Path) -> Node:
    """Read and parse a spec file; unreadable files are `SpecError`s naming the file."""
    p = Path(path)
    shown = str(path)
    if "\0" in shown:
        raise SpecError.at(Loc(shown.replace("\0", "\\0"), 1, 1), "spec path contains a NUL byte", "check the path")
    try:
        if not p.is_file():
            what = "is a directory" if p.is_dir() else "does not exist" if not p.exists() else "is not a regular file"
            raise SpecError.at(Loc(shown, 1, 1), f"spec file {what}", "pass the path of a .yaml spec")
        if p.stat().st_size > MAX_BYTES:
            raise SpecError.at(Loc(shown, 1, 1), f"spec is {p.stat().st_size / 1e6:.1f} MB; "
                               f"the limit is {MAX_BYTES / 1e6:.0f} MB", "put data in a csv or npz file")
        data = p.read_bytes()
    except OSError as e:
        raise SpecError.at(Loc(shown, 1, 1), f"cannot read spec: {e.strerror or e}", "check the path and its permissions") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SpecError.at(Loc(shown, line, 1), "spec is not UTF-8 text", "save the file as UTF-8") from None
    return parse_text(text, shown)


class _Frame:
    __slots__ = ("node", "anchor", "key", "key_loc", "size")

    def __init__(self, node: Node, anchor: str | None):
        self.node, self.anchor, self.key, self.key_loc, self.size = node, anchor, None, None, 1


class _Composer:
    """Builds the located tree from PyYAML's events, iteratively (deep files cannot blow the stack),
    counting values as aliases expand (a billion-laughs file stops after bounded work)."""

    def __init__(self, src: Source):
        self.src = src
        self.anchors: dict[str, tuple[Node, int]] = {}
        self.stack: list[_Frame] = []
        self.total = 0
        self.root: Node | None = None
        self.documents = 0

    def compose(self, events: Any) -> Node:
        for event in events:
            self.event(event, _loc(event.start_mark, self.src))
        if self.root is None:
            raise SpecError.at(Loc(self.src.name, 1, 1, self.src), "spec is empty", "a spec starts with 'specc: 1'")
        return self.root

    def event(self, event: Any, loc: Loc) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise SpecError.at(loc, "a spec file holds one YAML document", "remove the extra '---'")
            return
        if isinstance(event, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)):
            return
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise SpecError.at(loc, f"YAML tags are not allowed (found '{tag}')",
                               "remove the tag; specs hold plain data and never name Python objects")
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise SpecError.at(loc, f"unknown alias '*{event.anchor}'", "define the anchor with & before using it")
            node, size = self.anchors[event.anchor]
            self.add(node, size, loc)
        elif isinstance(event, yaml.ScalarEvent):
            node = Node(resolve_scalar(event.value, loc) if event.style is None else event.value, loc)
            if event.anchor:
                self.anchors[event.anchor] = (node, 1)
            self.add(node, 1, loc)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(self.stack) >= MAX_DEPTH:
                raise SpecError.at(loc, f"spec nests deeper than {MAX_DEPTH} levels", "flatten the structure")
            self.stack.append(_Frame(Node([] if isinstance(event, yaml.SequenceStartEvent) else {}, loc), event.anchor))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            self.close()
        else:  # pragma: no cover - PyYAML emits no other events
            raise SpecError.at(loc, f"unexpected YAML event {type(event).__name__}")

    def close(self) -> None:
        frame = self.stack.pop()
        if frame.anchor:
            self.anchors[frame.anchor] = (frame.node, frame.size)
        if self.stack:
            self.stack[-1].size += frame.size
            _attach(self.stack[-1], frame.node)
        else:
            self.add(frame.node, 0, frame.node.loc)

    def add(self, child: Node, size: int, loc: Loc) -> None:
        self.total += size
        if self.total > MAX_VALUES:
            raise SpecError.at(loc, f"spec expands to more than {MAX_VALUES} values",
                               "aliases are expanded; an alias bomb or a huge inline table is refused")
        if not self.stack:
            self.root = child
            return
        top = self.stack[-1]
        top.size += size
        if top.node.is_seq or top.key is not None:
            _attach(top, child)
            return
        if child.is_map or child.is_seq:  # a key
            raise SpecError.at(child.loc, "mapping keys must be plain names", "write the key as text")
        key = "" if child.value is None else str(child.value)
        if key in top.node.value:
            first = top.node.key_locs[key]
            raise SpecError.at(child.loc, f"duplicate key '{key}' (first at line {first.line})",
                               "remove one of them; YAML keeps only one")
        top.key, top.key_loc = key, child.loc


def _compose(events: Any, src: Source) -> Node:
    return _Composer(src).compose(events)


def _attach(parent: _Frame, child: Node) -> None:
    """Attach a finished value to its parent (its values were already counted)."""
    if parent.node.is_seq:
        parent.node.value.append(child)
    elif parent.key is None:
        raise SpecError.at(child.loc, "mapping keys must be plain names", "write the key as text")
    else:
        parent.node.value[parent.key] = child
        parent.node.key_locs[parent.key] = parent.key_loc
        parent.key = None
