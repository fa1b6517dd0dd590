"""`--set` overrides, merged into the located tree before checking.

A key is a param name (`depth=6`) or a dotted path into the spec (`train.optimizer.lr=0.01`,
`layers.0.out_features=32`); a path may add keys and sections the spec lacks (`train.data.text=book.txt`),
which are then checked like any others. Values are YAML scalars or flow collections, parsed with the
same loader as specs, so `--set on=on` stays a string and tags are refused.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from .errors import Loc, Source, SpecError, did_you_mean
from .source import Node, parse_text
from .spec import TOP_KEYS

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")


def parse_set(item: str) -> tuple[str, Node, Loc]:
    """`key=value` -> (key, located value node, location of the key)."""
    src = Source("--set", item)
    key, sep, text = item.partition("=")
    key_loc = Loc("--set", 1, 1, src)
    if not sep or not _KEY.fullmatch(key.strip()):
        raise SpecError.at(key_loc, f"cannot read override {item!r}", "write --set name=value or --set a.b.c=value")
    value_col = len(key) + 2
    try:
        node = parse_text(text if text.strip() else "''", "--set")
    except SpecError as e:
        d = e.diagnostics[0]
        raise SpecError.at(Loc("--set", 1, value_col + d.col - 1, src), d.message, d.hint) from None
    _relocate(node, src, value_col - 1)
    return key.strip(), node, key_loc


def _relocate(node: Node, src: Source, shift: int) -> None:
    node.loc = Loc("--set", 1, node.loc.col + shift, src)
    if node.is_map:
        node.key_locs = {k: Loc("--set", 1, v.col + shift, src) for k, v in node.key_locs.items()}
        for v in node.value.values():
            _relocate(v, src, shift)
    elif node.is_seq:
        for v in node.value:
            _relocate(v, src, shift)


def to_node(value: Any, loc: Loc) -> Node:
    """A Python value from the API, as a located node."""
    if isinstance(value, Mapping):
        return Node({str(k): to_node(v, loc) for k, v in value.items()}, loc, {str(k): loc for k in value})
    if isinstance(value, (list, tuple)):
        return Node([to_node(v, loc) for v in value], loc)
    if value is None or isinstance(value, (bool, int, float, str)):
        return Node(value, loc)
    raise SpecError.at(loc, f"override value {value!r} is not plain data", "pass numbers, strings, lists or dicts")


def normalize(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[tuple[str, Node, Loc]]:
    """API dicts (`{"depth": 6}`) and CLI strings (`"depth=6"`) become located overrides."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        out = []
        for k, v in overrides.items():
            src = Source("--set", f"{k}={v!r}")
            loc = Loc("--set", 1, 1, src)
            if not _KEY.fullmatch(str(k)):
                raise SpecError.at(loc, f"cannot read override key {k!r}", "use a param name or a dotted path")
            out.append((str(k), to_node(v, Loc("--set", 1, len(str(k)) + 2, src)), loc))
        return out
    if isinstance(overrides, str):
        overrides = [overrides]
    return [parse_set(item) for item in overrides]


def apply_overrides(tree: Node, overrides: Mapping[str, Any] | Iterable[str] | None) -> Node:
    """Merge overrides into the tree in place; every bad key is reported together."""
    items = normalize(overrides)
    errors = []
    for key, value, loc in items:
        try:
            _apply(tree, key, value, loc)
        except SpecError as e:
            errors.extend(e.diagnostics)
    if errors:
        raise SpecError(errors)
    return tree


def _apply(tree: Node, key: str, value: Node, loc: Loc) -> None:
    if not tree.is_map:
        raise SpecError.at(loc, "cannot override a spec that is not a mapping")
    params = tree.get("params")
    if "." not in key:
        if params is not None and params.is_map and key in params.value:
            params.value[key] = value
            return
        if key in TOP_KEYS and key in tree.value:
            tree.value[key] = value
            return
        names = list(params.value) if params is not None and params.is_map else []
        raise SpecError.at(loc, f"unknown param '{key}'", did_you_mean(key, names, "param")
                           or "params are declared under params:; use a dotted path (train.epochs=5) for other keys")
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[:i]) or "the spec"
        if node.is_map:
            if last:
                node.value[part] = value
                node.key_locs.setdefault(part, loc)
                return
            if part not in node.value:  # a new section or key: the checker judges it (and its spelling)
                node.value[part] = Node({}, loc)
                node.key_locs[part] = loc
            node = node.value[part]
        elif node.is_seq:
            if not part.isdigit() or int(part) >= len(node.value):
                raise SpecError.at(loc, f"--set {key}: '{part}' is not an index of {where} "
                                   f"(it has {len(node.value)} entries)", f"use 0 … {len(node.value) - 1}")
            if last:
                node.value[int(part)] = value
                return
            node = node.value[int(part)]
            if isinstance(node.value, str) and not last:  # `- ReLU` shorthand: make it a mapping to set args
                op = node
                node.value, node.key_locs = {"op": Node(op.value, op.loc)}, {"op": op.loc}
        else:
            raise SpecError.at(loc, f"--set {key}: {where} is a plain value, not a mapping",
                               f"set {where} itself")
