"""torch's signatures, recorded: the argument lists of the allowed `torch.nn` modules and of every
loss, optimizer and scheduler, with types in the `compiler.types` language.

Checking a spec reads `catalog.json` and never imports torch, so a typo is reported at once.
The file is generated from the installed torch; a test regenerates it and compares:

    python -m compiler.catalog        # rewrite compiler/catalog.json from this torch
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("catalog.json")
REQUIRED = "<required>"  # the default of an argument that has none

# torch annotates these with types a YAML value cannot be, or not at all: we write them out
_MANUAL: dict[str, list[tuple[str, str, Any]]] = {
    "RNN": [("input_size", "int", REQUIRED), ("hidden_size", "int", REQUIRED), ("num_layers", "int", 1),
            ("nonlinearity", "'tanh' | 'relu'", "tanh"), ("bias", "bool", True), ("batch_first", "bool", False),
            ("dropout", "float", 0.0), ("bidirectional", "bool", False)],
    "GRU": [("input_size", "int", REQUIRED), ("hidden_size", "int", REQUIRED), ("num_layers", "int", 1),
            ("bias", "bool", True), ("batch_first", "bool", False), ("dropout", "float", 0.0),
            ("bidirectional", "bool", False)],
    "MultiheadAttention": [("embed_dim", "int", REQUIRED), ("num_heads", "int", REQUIRED), ("dropout", "float", 0.0),
                           ("bias", "bool", True), ("add_bias_kv", "bool", False), ("add_zero_attn", "bool", False),
                           ("kdim", "int | null", None), ("vdim", "int | null", None), ("batch_first", "bool", False)],
}
_MANUAL["LSTM"] = _MANUAL["GRU"] + [("proj_size", "int", 0)]
_NARROW = {("TransformerEncoderLayer", "activation"): "'relu' | 'gelu'"}
_SKIP = {"self", "device", "dtype", "_weight", "_freeze", "args", "kwargs"}
_NO_SCHEDULERS = {"LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "LRScheduler", "_LRScheduler"}


@cache
def load() -> dict[str, Any]:
    """{"torch": version, "modules": {name: [[arg, type, default], ...]}, "losses": ..., ...}"""
    return json.loads(PATH.read_text())


_generating = False  # set while catalog.json is being written: the registry is built without it


def module_args(name: str) -> list[tuple[str, str, Any]]:
    if _generating:
        return []
    return [tuple(a) for a in load()["modules"][name]]


def module_attributes() -> frozenset[str]:
    """Attribute names of the modules specc builds (nn.Module, nn.Sequential, fx.GraphModule): a
    submodule of that name would shadow them, or be shadowed."""
    return frozenset(load().get("module_attributes", ()))


def component_args(kind: str, name: str) -> list[str]:
    """Argument names of a loss, optimizer or scheduler (kind: losses | optimizers | schedulers)."""
    return [a for a, _, _ in load()[kind][name]]


def names(kind: str) -> list[str]:
    return list(load()[kind])


# --- generation (imports torch) -------------------------------------------------------------

def _default(value: Any) -> Any:
    import inspect
    if value is inspect.Parameter.empty:
        return REQUIRED
    if callable(value) and not isinstance(value, type):
        return getattr(value, "__name__", REQUIRED)
    if isinstance(value, tuple):
        return list(value)
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    return REQUIRED


def _signature(cls: type, skip: set[str], name: str = "") -> list[list[Any]]:
    import inspect
    import typing
    from .types import from_python
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:
        hints = {}
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = _default(p.default)
        ann = _NARROW.get((name, p.name)) or from_python(hints.get(p.name, typing.Any))
        if ann == "any" and default not in (REQUIRED, None):
            ann = "int | float" if name == "Upsample" else type(default).__name__ if type(default) is not list else "[...]"
        out.append([p.name, ann, default])
    return out


def generate(module_names: list[str]) -> dict[str, Any]:
    import torch
    import torch.nn as nn
    import torch.optim as optim
    import torch.optim.lr_scheduler as sched
    modules = {}
    for name in module_names:
        modules[name] = [list(a) for a in _MANUAL[name]] if name in _MANUAL else _signature(getattr(nn, name), _SKIP, name)
    losses = {n: _signature(c, _SKIP | {"size_average", "reduce"}) for n, c in sorted(vars(nn).items())
              if isinstance(c, type) and n.endswith("Loss") and issubclass(c, nn.Module) and not n.startswith("_")}
    optimizers = {n: _signature(c, _SKIP | {"params"}) for n, c in sorted(vars(optim).items())
                  if isinstance(c, type) and issubclass(c, optim.Optimizer) and c is not optim.Optimizer}
    schedulers = {n: _signature(c, _SKIP | {"optimizer"}) for n, c in sorted(vars(sched).items())
                  if isinstance(c, type) and n not in _NO_SCHEDULERS and not n.startswith("_")
                  and (issubclass(c, sched.LRScheduler) or c is sched.ReduceLROnPlateau)}
    import torch.fx as fx
    # ___-names are torch._dynamo's run-time marks on nn.Module (set once anything is compiled or exported),
    # not attributes of a module: the catalog must not depend on what the process ran before
    built = set(dir(fx.GraphModule(nn.Module(), fx.Graph()))) | set(dir(nn.Sequential()))
    return {"torch": torch.__version__.split("+")[0], "modules": modules, "losses": losses,
            "optimizers": optimizers, "schedulers": schedulers,
            "module_attributes": sorted(n for n in built if n.isidentifier() and not n.startswith("___"))}


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1) + "\n"


if __name__ == "__main__":
    _generating = True
    from compiler import catalog as _self  # the module the registry reads, not this __main__ copy
    _self._generating = True
    from .ops import MODULES
    PATH.write_text(dumps(generate(list(MODULES))))
    print(f"wrote {PATH}")
