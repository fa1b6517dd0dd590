"""Custom ops from installed packages, through the entry-point group `specc.ops`.

The registry stays closed: a spec can only name ops that an installed distribution declared.
An entry point names a function that returns a list of declarations:

    def specc_ops():
        return [{
            "name": "Swish",                 # CamelCase: a module op
            "module": SwishModule,           # an nn.Module subclass
            "args": {"beta": (float, 1.0)},  # name -> (type, default); inspect.Parameter.empty: required
            "infer": None,                   # or ("in_features", -1): argument and input dim
            "formats": ["onnx", "pt2", "torchscript", "compile"],
        }]
"""
from __future__ import annotations

import inspect
import sys
from importlib import metadata
from typing import Any

from . import calls
from .ops import FORMATS, REQUIRED, Arg, Infer, OpDef
from .types import from_python

GROUP = "specc.ops"


class PluginError(Exception):
    pass


def declare(decl: dict[str, Any], dist: str) -> OpDef:
    """Turn one plugin declaration into an `OpDef`, refusing anything malformed."""
    name = decl.get("name")
    if not isinstance(name, str) or not name[:1].isupper() or not name.isidentifier():
        raise PluginError(f"op name {name!r} must be a CamelCase identifier")
    import torch.nn as nn  # a plugin is torch code: loading one imports torch
    cls = decl.get("module")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise PluginError(f"op {name}: 'module' must be an nn.Module subclass")
    args = {}
    for arg, spec in dict(decl.get("args", {})).items():
        typ, default = spec if isinstance(spec, tuple) else (spec, REQUIRED)
        if default is inspect.Parameter.empty:
            default = REQUIRED
        args[arg] = Arg(arg, typ if isinstance(typ, str) else from_python(typ), default)
    infer = decl.get("infer")
    if infer is not None:
        arg, dim = infer
        if arg not in args:
            raise PluginError(f"op {name}: inferred argument '{arg}' is not among its args")
        infer = Infer(arg, int(dim))
    formats = frozenset(decl.get("formats", FORMATS))
    unknown = formats - set(FORMATS)
    if unknown:
        raise PluginError(f"op {name}: unknown export formats {sorted(unknown)}")
    inputs = tuple(decl.get("inputs", (1, 1)))
    lo, hi = inputs
    slots = tuple(f"input{i}" if i else "input" for i in range(max(hi, lo, 1)))
    return OpDef(name, "module", cls, args, slots, lo, hi == -1, infer, int(decl.get("outputs", 1)), calls.module,
                 formats=formats, doc=str(decl.get("doc", "")), plugin=dist)


def load_plugins(registry: dict[str, OpDef]) -> None:
    """Add every installed plugin's ops; a broken plugin is reported once and skipped."""
    for ep in metadata.entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist else ep.value
        try:
            decls = ep.load()()
            for decl in decls:
                op = declare(decl, dist)
                if op.name in registry:
                    raise PluginError(f"op {op.name} is already defined")
                registry[op.name] = op
        except Exception as e:  # a third-party package: never let it break specc
            print(f"warning: specc plugin '{ep.name}' from {dist} was skipped: {e}", file=sys.stderr)
