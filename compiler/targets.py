"""Qualified names in the op registry (`torch.add`, `torch.nn.Linear`) to the objects they name.

Only names the registry (or a plugin, which hands over its class) declares are ever resolved,
and only under `torch`, `operator` and `compiler.modules`: a spec cannot name an import path.
"""
from __future__ import annotations

import importlib
import operator
from functools import cache
from typing import Any

_ROOTS = ("torch", "operator", "compiler.modules")


@cache
def resolve(target: Any) -> Any:
    if not isinstance(target, str):
        return target  # a plugin's class
    if target.startswith("operator."):
        return getattr(operator, target.split(".", 1)[1])
    if target.startswith("compiler.modules."):
        return getattr(importlib.import_module("compiler.modules"), target.rsplit(".", 1)[1])
    assert target.split(".")[0] in _ROOTS, target
    obj: Any = importlib.import_module("torch")
    for part in target.split(".")[1:]:
        obj = getattr(obj, part)
    return obj
