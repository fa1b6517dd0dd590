"""Argument types, torch-free: a small type language that YAML values are checked against.

Types are written as text, the same text `specc ops` shows: `int`, `float`, `bool`, `str`,
`null`, `any`, a literal `'zeros'`, a list `[int, ...]`, a fixed-length list `[int, int]`, and
alternatives `int | [int, int]`. The op catalog stores argument types this way, so checking a
spec never needs torch's signatures at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class T:
    """One parsed type. kind: name (int/float/bool/str/null/any), lit, list, tuple, union."""

    kind: str
    name: str = ""  # for kind "name"; the literal's text for "lit"
    items: tuple["T", ...] = ()  # list: (element,), tuple: each position, union: the alternatives

    def __str__(self) -> str:
        return describe(self)


ANY = T("name", "any")
_NAMES = ("int", "float", "bool", "str", "null", "any", "never")  # never: no YAML value fits


class TypeSyntaxError(ValueError):
    pass


@lru_cache(maxsize=None)
def parse(text: str) -> T:
    """`'int | [int, int]'` -> a `T`."""
    t, rest = _union(text.strip())
    if rest.strip():
        raise TypeSyntaxError(f"unexpected {rest!r} in type {text!r}")
    return t


def _union(s: str) -> tuple[T, str]:
    parts = []
    while True:
        t, s = _atom(s.lstrip())
        parts.append(t)
        s = s.lstrip()
        if not s.startswith("|"):
            break
        s = s[1:]
    return (parts[0] if len(parts) == 1 else T("union", items=tuple(parts))), s


def _atom(s: str) -> tuple[T, str]:
    if s.startswith("'"):
        end = s.index("'", 1)
        return T("lit", s[1:end]), s[end + 1:]
    if s.startswith("["):
        s = s[1:].lstrip()
        if s.startswith("...]"):
            return T("list", items=(ANY,)), s[4:]
        items = []
        while True:
            t, s = _union(s.lstrip())
            items.append(t)
            s = s.lstrip()
            if s.startswith(","):
                s = s[1:].lstrip()
                if s.startswith("..."):
                    s = s[3:].lstrip()
                    if not s.startswith("]") or len(items) != 1:
                        raise TypeSyntaxError("'...' ends a list of one element type")
                    return T("list", items=(items[0],)), s[1:]
                continue
            if s.startswith("]"):
                return T("tuple", items=tuple(items)), s[1:]
            raise TypeSyntaxError(f"expected ',' or ']' in type at {s!r}")
    for name in _NAMES:
        if s.startswith(name) and not s[len(name):len(name) + 1].isalnum():
            return T("name", name), s[len(name):]
    raise TypeSyntaxError(f"unknown type at {s!r}")


def is_number(v: Any) -> bool:
    """An int or float that is not a bool (YAML's true is not 1 here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def conforms(value: Any, t: T | str) -> bool:
    """True if a plain YAML value (after expressions) is acceptable for the type."""
    t = parse(t) if isinstance(t, str) else t
    k = t.kind
    if k == "union":
        return any(conforms(value, a) for a in t.items)
    if k == "lit":
        return value == t.name
    if k in ("list", "tuple"):
        if not isinstance(value, list):
            return False
        if k == "list":
            return all(conforms(v, t.items[0]) for v in value)
        return len(value) == len(t.items) and all(conforms(v, a) for v, a in zip(value, t.items))
    return {
        "any": lambda: True,
        "null": lambda: value is None,
        "bool": lambda: isinstance(value, bool),
        "int": lambda: _is_int(value),
        "float": lambda: isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": lambda: isinstance(value, str),
        "never": lambda: False,
    }[t.name]()


def describe(t: T | str) -> str:
    """The canonical text of a type (what `parse` reads back)."""
    t = parse(t) if isinstance(t, str) else t
    if t.kind == "union":
        return " | ".join(dict.fromkeys(describe(a) for a in t.items))
    if t.kind == "lit":
        return repr(t.name)
    if t.kind == "list":
        return "[...]" if t.items[0] == ANY else f"[{describe(t.items[0])}, ...]"
    if t.kind == "tuple":
        return "[" + ", ".join(describe(a) for a in t.items) + "]"
    return t.name


def yaml_name(value: Any) -> str:
    """How a user would call the type of a value they wrote."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def json_schema(t: T | str) -> dict:
    """The JSON Schema of a type, for `specc schema` (expressions are always allowed too)."""
    t = parse(t) if isinstance(t, str) else t
    if t == ANY:
        return {}
    return {"anyOf": [_schema(t), {"type": "string", "pattern": r"\$"}]}


_JSON = {"null": "null", "bool": "boolean", "int": "integer", "float": "number", "str": "string"}


def _schema(t: T) -> dict:
    if t.kind == "union":
        return {"anyOf": [_schema(a) for a in t.items]}
    if t.kind == "lit":
        return {"enum": [t.name]}
    if t.kind == "list":
        return {"type": "array", "items": _schema(t.items[0])}
    if t.kind == "tuple":
        return {"type": "array", "prefixItems": [_schema(a) for a in t.items], "minItems": len(t.items),
                "maxItems": len(t.items)}
    if t.name == "never":
        return {"not": {}}
    return {} if t.name == "any" else {"type": _JSON[t.name]}


def from_python(ann: Any) -> str:
    """The text of a Python/typing annotation (for the catalog generator and plugins)."""
    import collections.abc
    import types
    import typing
    if ann is typing.Any or ann is None:
        return "any"
    if ann is type(None):
        return "null"
    if ann in (bool, int, float, str):
        return ann.__name__
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        parts = [p for p in (from_python(a) for a in args) if p != "never"]
        return " | ".join(dict.fromkeys(parts)) or "never"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (tuple, list, collections.abc.Sequence):
        if not args:
            return "[...]"
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            return "[" + ", ".join(from_python(a) for a in args) + "]"
        return f"[{from_python(args[0])}, ...]"
    if getattr(ann, "__name__", "") == "Size":  # torch.Size
        return "[int, ...]"
    return "never"  # tensors, callables, dtypes: nothing a YAML value can be
