"""The JSON Schema of spec files, generated from the op registry (for editors)."""
from __future__ import annotations

from typing import Any

from .ops import OpDef, registry
from .spec import DTYPES
from .types import json_schema

SCHEMA_ID = "https://specc.dev/schema/specc-1.json"


def _op_args(op: OpDef) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for a in op.args.values():
        s = json_schema(a.type)
        if not a.required and isinstance(a.default, (int, float, str, bool, type(None))):
            s["default"] = a.default
        props[a.name] = s
    return props


_NODE_KEYS = {
    "when": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
    "trainable": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
    "names": {"type": "string"},
    "tie": {"type": "object", "additionalProperties": {"type": "string"}},
    "seq": {"$ref": "#/$defs/layers"},
    "layers": {"$ref": "#/$defs/layers"},
    "outputs": {"$ref": "#/$defs/refs"},
}


def spec_schema() -> dict[str, Any]:
    ops = registry()
    ref = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[0-9]+)?$"}
    refs = {"anyOf": [ref, {"type": "array", "items": ref, "minItems": 1},
                      {"type": "object", "additionalProperties": ref}]}
    base = {"op": {"enum": sorted(ops)}, "block": {"type": "string"},
            "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "from": {"$ref": "#/$defs/refs"},
            "repeat": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}, **_NODE_KEYS}
    per_op = [{"if": {"required": ["op"], "properties": {"op": {"const": name}}},
               "then": {"properties": dict(base, **_op_args(op)), "additionalProperties": False}}
              for name, op in sorted(ops.items())]
    node = {"anyOf": [{"type": "string"},
                      {"type": "object", "properties": base, "allOf": per_op,
                       "oneOf": [{"required": [k]} for k in ("op", "block", "seq", "layers")]}]}
    dim = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]}
    shape = {"type": "array", "items": dim, "minItems": 1}
    layers = {"$ref": "#/$defs/layers"}
    constraint = {"type": "object", "additionalProperties": False, "properties": {
        k: {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]} for k in ("divisible_by", "min", "max")}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "specc model spec, version 1.1",
        "type": "object",
        "required": ["specc", "name", "inputs"],
        "oneOf": [{"required": ["layers"]}, {"required": ["seq"]}],
        "additionalProperties": False,
        "$defs": {"node": node, "refs": refs,
                  "layers": {"type": "array", "items": {"$ref": "#/$defs/node"}, "minItems": 1}},
        "properties": {
            "specc": {"const": 1},
            "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_-]*$"},
            "description": {"type": "string"},
            "params": {"type": "object"},
            "inputs": {"type": "object", "minProperties": 1, "additionalProperties": {"anyOf": [shape, {
                "type": "object", "required": ["shape"], "additionalProperties": False,
                "properties": {"shape": shape, "dtype": {"enum": list(DTYPES)},
                               "range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}}}]}},
            "dims": {"type": "object", "additionalProperties": constraint},
            "blocks": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": False, "oneOf": [{"required": ["layers"]}, {"required": ["seq"]}],
                "properties": {"params": {"type": "object"}, "inputs": {"type": "array", "items": {"type": "string"}},
                               "layers": layers, "seq": layers, "outputs": {"$ref": "#/$defs/refs"},
                               "description": {"type": "string"}}}},
            "layers": layers,
            "seq": layers,
            "outputs": {"$ref": "#/$defs/refs"},
            "train": {"type": "object"},
            "export": {"type": "object"},
            "hf": {"type": "object", "additionalProperties": False, "required": ["model_type"],
                   "properties": {"model_type": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                                  "config": {"type": "object"}, "expect": {"type": "object"}}},
        },
    }
