"""Initial values, written once: how a spec names them, how they are checked, applied and ejected.

    zeros | ones | xavier_uniform | xavier_normal | kaiming_uniform | kaiming_normal
    {normal: STD} | {trunc_normal: STD} | {uniform: [LOW, HIGH]} | {constant: V}
    {kaiming_normal: fan_in | fan_out} | {kaiming_uniform: fan_in | fan_out}   (nonlinearity relu)
    {xavier_uniform: GAIN} | {xavier_normal: GAIN}

`Parameter`/`Buffer` nodes take one as `init:`; a module node takes `init: {weight: ..., bias: ...}`
for its own parameters (nanoGPT's normal(0.02), torchvision's kaiming_normal fan_out, ...).
Checking is torch-free; `apply` and `code` are the lowering's and the eject's halves.
"""
from __future__ import annotations

from typing import Any

from .types import is_number

_PLAIN = ("zeros", "ones", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")
_STD = ("normal", "trunc_normal")
_GAIN = ("xavier_uniform", "xavier_normal")
_MODE = ("kaiming_uniform", "kaiming_normal")
NAMES = _PLAIN + _STD + ("uniform", "constant")
FORMS = "zeros | ones | {normal: 0.02} | {uniform: [-0.1, 0.1]} | {trunc_normal: 0.02} | {constant: 0.5} | " \
        "xavier_uniform | kaiming_normal | {kaiming_normal: fan_out}"
_FLOAT_ONLY = set(NAMES) - {"zeros", "ones", "constant"}


def parse(init: Any) -> tuple[str | None, Any]:
    """(name, argument) of an init value; name None if it is not one."""
    if isinstance(init, str):
        return (init, None) if init in _PLAIN else (None, None)
    if isinstance(init, dict) and len(init) == 1:
        name, value = next(iter(init.items()))
        return (name, value) if name in NAMES else (None, None)
    return None, None


def problem(init: Any, dtype: str = "float32", rank: int | None = None) -> tuple[str, str] | None:
    """(message, hint) if `init` is not a valid init for a tensor of this dtype (and rank), else None."""
    name, value = parse(init)
    if name is None:
        return f"unknown init {init!r}", FORMS
    if name in _STD and not (is_number(value) and value >= 0):
        return f"init {name} takes a std ≥ 0, got {value!r}", f"{{{name}: 0.02}}"
    if name == "uniform" and not (isinstance(value, list) and len(value) == 2 and all(map(is_number, value))
                                  and value[0] <= value[1]):
        return f"init uniform takes [low, high] with low ≤ high, got {value!r}", "{uniform: [-0.1, 0.1]}"
    if name == "constant" and not is_number(value):
        return f"init constant takes a number, got {value!r}", "{constant: 0.5}"
    if name in _GAIN and value is not None and not (is_number(value) and value > 0):
        return f"init {name} takes a gain > 0, got {value!r}", f"{{{name}: 1.0}}"
    if name in _MODE and value not in (None, "fan_in", "fan_out"):
        return f"init {name} takes fan_in or fan_out, got {value!r}", f"{{{name}: fan_out}}"
    if not dtype.startswith(("float", "bfloat")) and name in _FLOAT_ONLY:
        return f"init {name} draws floats; this tensor is {dtype}", "use zeros, ones or {constant: v}"
    if rank is not None and rank < 2 and name in _GAIN + _MODE:
        return f"init {name} needs a tensor of 2 or more dims (fan in and out); this one has {rank}", \
            "use normal, uniform or zeros for biases and vectors"
    return None


def apply(t: Any, init: Any) -> Any:
    """Fill `t` in place (under no_grad) with `init`."""
    import torch
    import torch.nn as nn
    name, value = parse(init)
    with torch.no_grad():
        if name in ("zeros", "ones", "constant"):
            t.fill_({"zeros": 0, "ones": 1}.get(name, value))
        elif name == "normal":
            t.normal_(0.0, value)
        elif name == "trunc_normal":
            nn.init.trunc_normal_(t, std=value)
        elif name == "uniform":
            t.uniform_(value[0], value[1])
        elif name in _GAIN:
            getattr(nn.init, name + "_")(t, gain=1.0 if value is None else value)
        else:
            getattr(nn.init, name + "_")(t, mode=value or "fan_in", nonlinearity="relu")
    return t


def code(expr: str, init: Any) -> str:
    """The eject's statement that initializes the tensor `expr`."""
    name, value = parse(init)
    if name in ("zeros", "ones", "constant"):
        return f"nn.init.constant_({expr}, {({'zeros': 0.0, 'ones': 1.0}.get(name, value))!r})"
    if name == "normal":
        return f"nn.init.normal_({expr}, 0.0, {value!r})"
    if name == "trunc_normal":
        return f"nn.init.trunc_normal_({expr}, std={value!r})"
    if name == "uniform":
        return f"nn.init.uniform_({expr}, {value[0]!r}, {value[1]!r})"
    if name in _GAIN:
        return f"nn.init.{name}_({expr}, gain={1.0 if value is None else value!r})"
    return f"nn.init.{name}_({expr}, mode={value or 'fan_in'!r}, nonlinearity='relu')"
