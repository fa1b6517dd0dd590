"""The `hf:` section: which Hugging Face folders a spec reads, and how their config.json becomes its params.

    hf:
      model_type: [llama, mistral]             # config.json's model_type must be one of these
      config:                                  # config.json field -> spec param
        hidden_size: hidden_size
        rope_parameters.rope_theta: rope_theta # a dotted path into a nested field (transformers 5)
        rope_theta: rope_theta                 # the same param from another field: the first present wins
        head_dim: {param: head_dim, optional: true}   # absent or null: the spec's default stays
      expect:                                  # values the spec implements; another one is refused
        hidden_act: silu
        rope_parameters.rope_type: [default]

The section is plain data (no `$`), checked with the rest of the spec; `specc build SPEC --weights DIR`
(specc/hf.py) applies it. Nothing here imports torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection

from .errors import Collector, Loc, did_you_mean
from .source import Node

HF_KEYS = ("model_type", "config", "expect")
FIELD_KEYS = ("param", "optional")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


@dataclass(frozen=True)
class ConfigField:
    """`field: param`: config.json's `field` (a dotted path) gives `param`."""

    field: str
    param: str
    optional: bool
    loc: Loc


@dataclass(frozen=True)
class HFSection:
    model_types: tuple[str, ...]
    fields: tuple[ConfigField, ...]
    expect: dict[str, tuple[Any, ...]]  # field -> the values the spec implements
    loc: Loc

    def sources(self, param: str) -> list[ConfigField]:
        """The fields that give `param`, in the order written."""
        return [f for f in self.fields if f.param == param]


def check_hf(node: Node | None, params: Collection[str], c: Collector) -> HFSection | None:
    """The typed section, every problem recorded in `c`; None without a section. `params`: the names
    the spec declares (whether or not their values evaluated)."""
    if node is None:
        return None
    if not node.is_map:
        c.error(node.loc, "'hf' must be a mapping", "hf: {model_type: [llama], config: {hidden_size: hidden_size}}")
        return None
    for k, loc in node.key_locs.items():
        if k not in HF_KEYS:
            c.error(loc, f"unknown hf key '{k}'", did_you_mean(k, HF_KEYS, "key") or f"keys: {', '.join(HF_KEYS)}")
    types = _model_types(node.get("model_type"), node.loc, c)
    fields = _fields(node.get("config"), params, c)
    expect = _expect(node.get("expect"), c)
    return HFSection(types, fields, expect, node.loc)


def read_hf(node: Node | None, params: Collection[str] = ()) -> HFSection | None:
    """`check_hf` on its own, raising: the section is needed before the params it sets exist."""
    c = Collector()
    section = check_hf(node, params, c)
    c.raise_if_any()
    return section


def _model_types(node: Node | None, loc: Loc, c: Collector) -> tuple[str, ...]:
    if node is None:
        c.error(loc, "hf needs model_type: the config.json model_types this spec reads", "model_type: [llama]")
        return ()
    values = node.value if node.is_seq else [node]
    if not values or not all(isinstance(v.value, str) and v.value for v in values):
        c.error(node.loc, "model_type is a name or a list of names", "model_type: [llama, mistral]")
        return ()
    return tuple(v.value for v in values)


def _fields(node: Node | None, params: Collection[str], c: Collector) -> tuple[ConfigField, ...]:
    if node is None:
        return ()
    if not node.is_map:
        c.error(node.loc, "hf.config maps config.json fields to params", "config: {hidden_size: n_embd}")
        return ()
    out = []
    for field, value in node.value.items():
        loc = node.key_locs[field]
        if not _FIELD.fullmatch(field):
            c.error(loc, f"'{field}' is not a config.json field name", "a name, or a dotted path such as "
                    "rope_parameters.rope_theta")
            continue
        param, optional = _field_value(value, c)
        if param is None:
            continue
        if params and param not in params:
            c.error(value.loc, f"hf.config: '{param}' is not a param of the spec", did_you_mean(param, params, "param")
                    or "declare it under params:")
            continue
        out.append(ConfigField(field, param, optional, loc))
    return tuple(out)


def _field_value(value: Node, c: Collector) -> tuple[str | None, bool]:
    """`PARAM` or `{param: PARAM, optional: BOOL}`."""
    if isinstance(value.value, str) and value.value and "$" not in value.value:
        return value.value, False
    if value.is_map:
        for k, loc in value.key_locs.items():
            if k not in FIELD_KEYS:
                c.error(loc, f"unknown key '{k}'", did_you_mean(k, FIELD_KEYS, "key") or "param: NAME, optional: true")
        param, optional = value.get("param"), value.get("optional")
        if param is None or not isinstance(param.value, str):
            c.error(value.loc, "a config field names its param", "{param: head_dim, optional: true}")
            return None, False
        if optional is not None and not isinstance(optional.value, bool):
            c.error(optional.loc, "optional is true or false", "optional: true")
            return None, False
        return param.value, bool(optional.value) if optional is not None else False
    c.error(value.loc, "a config field maps to a param name", "hidden_size: n_embd, or {param: head_dim, optional: true}")
    return None, False


def _expect(node: Node | None, c: Collector) -> dict[str, tuple[Any, ...]]:
    if node is None:
        return {}
    if not node.is_map:
        c.error(node.loc, "hf.expect maps config.json fields to the values the spec implements",
                "expect: {hidden_act: silu}")
        return {}
    out = {}
    for field, value in node.value.items():
        if not _FIELD.fullmatch(field):
            c.error(node.key_locs[field], f"'{field}' is not a config.json field name", "hidden_act, or a dotted path")
            continue
        plain = value.plain()
        out[field] = tuple(plain) if isinstance(plain, list) else (plain,)
    return out


def lookup(config: dict[str, Any], field: str) -> Any:
    """config.json's value at a dotted path; None when absent."""
    value: Any = config
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value

