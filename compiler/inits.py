"""Initial values, written once: how a spec names them, how they are checked, applied and ejected.

    zeros | ones | xavier_uniform | xavier_normal | kaiming_uniform | kaiming_normal
    {normal: STD} | {trunc_normal: STD} | {uniform: [LOW, HIGH]} | {constant: V}
    {kaiming_normal: fan_in | fan_out} | {kaiming_uniform: fan_in | fan_out}   (nonlinearity relu)
    {xavier_uniform: GAIN} | {xavier_normal: GAIN}
    {arange: N} | {arange: [START, END, STEP]} | {values: [...]}   (given values, reshaped to the tensor)

`Parameter`/`Buffer` nodes take one as `init:`; a module node takes `init: {weight: ..., bias: ...}`
for its own parameters (nanoGPT's normal(0.02), torchvision's kaiming_normal fan_out, ...).
Checking is torch-free; `apply` and `code` are the lowering's and the eject's halves.
"""
from __future__ import annotations

import math
from typing import Any

from .types import is_number

_PLAIN = ("zeros", "ones", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")
_STD = ("normal", "trunc_normal")
_GAIN = ("xavier_uniform", "xavier_normal")
_MODE = ("kaiming_uniform", "kaiming_normal")
_GIVEN = ("arange", "values")
NAMES = _PLAIN + _STD + ("uniform", "constant") + _GIVEN
FORMS = "zeros | ones | {normal: 0.02} | {uniform: [-0.1, 0.1]} | {trunc_normal: 0.02} | {constant: 0.5} | " \
        "xavier_uniform | kaiming_normal | {kaiming_normal: fan_out} | {arange: 16} | {values: [1, 2, 3]}"
MAX_VALUES = 1_000_000
_FLOAT_ONLY = set(NAMES) - {"zeros", "ones", "constant"}


def parse(init: Any) -> tuple[str | None, Any]:
    """(name, argument) of an init value; name None if it is not one."""
    if isinstance(init, str):
        return (init, None) if init in _PLAIN else (None, None)
    if isinstance(init, dict) and len(init) == 1:
        name, value = next(iter(init.items()))
        return (name, value) if name in NAMES else (None, None)
    return None, None


def problem(init: Any, dtype: str = "float32", rank: int | None = None,
            shape: tuple[int, ...] | None = None) -> tuple[str, str] | None:
    """(message, hint) if `init` is not a valid init for a tensor of this dtype (and rank, or shape),
    else None."""
    name, value = parse(init)
    if name is None:
        return f"unknown init {init!r}", FORMS
    if name in _GIVEN:
        return _given_problem(name, value, shape)
    rank = len(shape) if shape is not None else rank
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


def _range(value: Any) -> list:
    """`{arange: N}` is [0, N, 1]; `{arange: [start, end]}` steps by 1."""
    return [0, value, 1] if not isinstance(value, list) else value + [1] * (3 - len(value))


def _flat(value: Any) -> list:
    return [x for v in value for x in _flat(v)] if isinstance(value, list) else [value]


def _count(name: str, value: Any) -> int:
    if name == "values":
        return len(_flat(value))
    start, end, step = _range(value)
    return max(0, math.ceil((end - start) / step))


def _given_problem(name: str, value: Any, shape: tuple[int, ...] | None) -> tuple[str, str] | None:
    if name == "arange":
        bounds = value if isinstance(value, list) else [value]
        if not (1 <= len(bounds) <= 3 and all(map(is_number, bounds))) or _range(value)[2] == 0:
            return f"init arange takes N or [start, end, step] (step not 0), got {value!r}", "{arange: 16}"
    elif not (isinstance(value, list) and value and all(map(is_number, _flat(value)))):
        return f"init values takes a non-empty list of numbers, got {value!r}", "{values: [1.0, 0.5, 0.25]}"
    n = _count(name, value)
    if n > MAX_VALUES:
        return f"init {name} gives {n:,} values, more than {MAX_VALUES:,}", "use a smaller range"
    if shape is not None and n != math.prod(shape):
        return f"init {name} gives {n} value{'s' if n != 1 else ''}, but the tensor has {math.prod(shape)} " \
               f"(shape {tuple(shape)})", f"give exactly {math.prod(shape)}; they are reshaped to {tuple(shape)}"
    return None


def given(init: Any) -> tuple[str, list] | None:
    """("torch.arange", [start, end, step]) or ("torch.tensor", [flat values]) for a given init, else None."""
    name, value = parse(init)
    if name == "arange":
        return "torch.arange", _range(value)
    if name == "values":
        return "torch.tensor", [_flat(value)]
    return None


def apply(t: Any, init: Any) -> Any:
    """Fill `t` in place (under no_grad) with `init`."""
    import torch
    import torch.nn as nn
    name, value = parse(init)
    made = given(init)
    with torch.no_grad():
        if made is not None:  # computed in the tensor's dtype, as `torch.arange(16, dtype=torch.float)` is
            fn, args = made
            t.copy_(getattr(torch, fn.split(".")[1])(*args, dtype=t.dtype).reshape(t.shape))
        elif name in ("zeros", "ones", "constant"):
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


def value_code(init: Any, shape: str, dtype: str) -> str | None:
    """The eject's expression of a given init's tensor (`torch.arange(0, 16, 1, dtype=...).reshape(...)`)."""
    made = given(init)
    if made is None:
        return None
    fn, args = made
    return f"{fn}({', '.join(map(repr, args))}, dtype={dtype}).reshape({shape})"


def code(expr: str, init: Any) -> str:
    """The eject's statement that initializes the tensor `expr`."""
    name, value = parse(init)
    made = value_code(init, f"{expr}.shape", f"{expr}.dtype")
    if made is not None:
        return f"with torch.no_grad(): {expr}.copy_({made})"
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
