"""Argument types: does a YAML value fit a torch signature's annotation, and how to name one."""
from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any

import torch

ANY = typing.Any


def _args(ann: Any) -> tuple:
    return typing.get_args(ann)


def conforms(value: Any, ann: Any) -> bool:
    """True if a plain YAML value (after expressions) is acceptable for the annotation."""
    if ann is ANY or ann is None and value is None:
        return True
    if ann is type(None):
        return value is None
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in _args(ann))
    if origin is typing.Literal:
        return value in _args(ann)
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if ann is torch.Size:
        return isinstance(value, list) and all(conforms(v, int) for v in value)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list):
            return False
        inner = _args(ann)
        if not inner:
            return True
        if origin is tuple and (len(inner) != 2 or inner[1] is not Ellipsis):
            return len(value) == len(inner) and all(conforms(v, a) for v, a in zip(value, inner))
        return all(conforms(v, inner[0]) for v in value)
    if origin is collections.abc.Callable or ann is collections.abc.Callable:
        return False  # no code from configs
    if ann is torch.Tensor or ann is torch.dtype:
        return False
    return False


def describe(ann: Any) -> str:
    """A short, YAML-minded name for an annotation: `int`, `int | [int, int]`, `'zeros' | 'reflect'`."""
    if ann is ANY:
        return "any"
    if ann is type(None):
        return "null"
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in _args(ann) if describe(a) != ""]
        return " | ".join(dict.fromkeys(parts))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in _args(ann))
    if ann is torch.Size:
        return "[int, ...]"
    if origin in (tuple, list, collections.abc.Sequence):
        inner = _args(ann)
        if not inner:
            return "[...]"
        if origin is tuple and (len(inner) != 2 or inner[1] is not Ellipsis):
            return "[" + ", ".join(describe(a) for a in inner) + "]"
        return f"[{describe(inner[0])}, ...]"
    if origin is collections.abc.Callable or ann is collections.abc.Callable:
        return ""
    return getattr(ann, "__name__", str(ann))


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


def json_schema(ann: Any) -> dict:
    """The JSON Schema of an annotation, for `specc schema` (expressions are always allowed too)."""
    expr = {"type": "string", "pattern": r"\$"}
    return {"anyOf": [_schema(ann), expr]} if ann is not ANY else {}


def _schema(ann: Any) -> dict:
    if ann is type(None):
        return {"type": "null"}
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a) for a in _args(ann) if describe(a)]}
    if origin is typing.Literal:
        return {"enum": list(_args(ann))}
    if ann is bool:
        return {"type": "boolean"}
    if ann is int:
        return {"type": "integer"}
    if ann is float:
        return {"type": "number"}
    if ann is str:
        return {"type": "string"}
    if ann is torch.Size:
        return {"type": "array", "items": {"type": "integer"}}
    if origin in (tuple, list, collections.abc.Sequence):
        inner = _args(ann)
        if inner and origin is tuple and (len(inner) != 2 or inner[1] is not Ellipsis):
            return {"type": "array", "prefixItems": [_schema(a) for a in inner], "minItems": len(inner),
                    "maxItems": len(inner)}
        return {"type": "array", "items": _schema(inner[0]) if inner else {}}
    return {}
