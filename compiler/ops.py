"""The closed op registry: CamelCase `torch.nn` modules and lowercase tensor functions.

Nothing outside this table (and installed `specc.ops` plugins) resolves: a spec cannot name a
dotted import path. Each op carries an argument schema, taken from the module's signature where
torch annotates it, so unknown and mistyped arguments are caught before anything is built.
"""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

REQUIRED = inspect.Parameter.empty
FORMATS = ("torchscript", "pt2", "compile", "onnx")


@dataclass(frozen=True)
class Arg:
    name: str
    type: Any = typing.Any
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Infer:
    """Which argument is the input's size, and which input dim holds it."""

    arg: str
    dim: int


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str  # "module" | "function"
    target: Any  # the nn.Module class, or the function called in forward
    args: dict[str, Arg]
    inputs: tuple[int, int] = (1, 1)  # min, max refs in `from:`; max -1 means any number
    infer: Infer | None = None
    outputs: int | Callable[[dict], int] = 1  # >1: the op returns a tuple
    formats: frozenset = frozenset(FORMATS)
    doc: str = ""
    plugin: str = ""  # the distribution that registered it

    def n_outputs(self, args: dict) -> int:
        return self.outputs(args) if callable(self.outputs) else self.outputs


# --- modules -------------------------------------------------------------------------------

_SKIP = {"self", "device", "dtype", "_weight", "_freeze", "args", "kwargs"}

_RNN_ARGS = [Arg("input_size", int), Arg("hidden_size", int), Arg("num_layers", int, 1), Arg("bias", bool, True),
             Arg("batch_first", bool, False), Arg("dropout", float, 0.0), Arg("bidirectional", bool, False)]
_MANUAL: dict[str, list[Arg]] = {
    "RNN": _RNN_ARGS[:2] + [Arg("num_layers", int, 1), Arg("nonlinearity", typing.Literal["tanh", "relu"], "tanh")]
    + _RNN_ARGS[3:],
    "GRU": _RNN_ARGS,
    "LSTM": _RNN_ARGS + [Arg("proj_size", int, 0)],
    "MultiheadAttention": [
        Arg("embed_dim", int), Arg("num_heads", int), Arg("dropout", float, 0.0), Arg("bias", bool, True),
        Arg("add_bias_kv", bool, False), Arg("add_zero_attn", bool, False), Arg("kdim", Optional[int], None),
        Arg("vdim", Optional[int], None), Arg("batch_first", bool, False)],
}

# name -> (inferred input size, input refs (min, max), outputs)
_MODULES: dict[str, tuple[Infer | None, tuple[int, int], Any]] = {
    "Linear": (Infer("in_features", -1), (1, 1), 1),
    "Bilinear": (None, (2, 2), 1),
    "Conv1d": (Infer("in_channels", -2), (1, 1), 1),
    "Conv2d": (Infer("in_channels", -3), (1, 1), 1),
    "Conv3d": (Infer("in_channels", -4), (1, 1), 1),
    "ConvTranspose1d": (Infer("in_channels", -2), (1, 1), 1),
    "ConvTranspose2d": (Infer("in_channels", -3), (1, 1), 1),
    "BatchNorm1d": (Infer("num_features", 1), (1, 1), 1),
    "BatchNorm2d": (Infer("num_features", -3), (1, 1), 1),
    "BatchNorm3d": (Infer("num_features", -4), (1, 1), 1),
    "LayerNorm": (Infer("normalized_shape", -1), (1, 1), 1),
    "GroupNorm": (Infer("num_channels", 1), (1, 1), 1),
    "RMSNorm": (Infer("normalized_shape", -1), (1, 1), 1),
    "Dropout": (None, (1, 1), 1),
    "Dropout1d": (None, (1, 1), 1),
    "Dropout2d": (None, (1, 1), 1),
    "Embedding": (None, (1, 1), 1),
    "GRU": (Infer("input_size", -1), (1, 2), 2),
    "LSTM": (Infer("input_size", -1), (1, 1), 2),
    "RNN": (Infer("input_size", -1), (1, 2), 2),
    "MultiheadAttention": (Infer("embed_dim", -1), (1, 3), 2),
    "TransformerEncoderLayer": (Infer("d_model", -1), (1, 1), 1),
    "ReLU": (None, (1, 1), 1),
    "ReLU6": (None, (1, 1), 1),
    "GELU": (None, (1, 1), 1),
    "SiLU": (None, (1, 1), 1),
    "Mish": (None, (1, 1), 1),
    "Tanh": (None, (1, 1), 1),
    "Sigmoid": (None, (1, 1), 1),
    "LeakyReLU": (None, (1, 1), 1),
    "ELU": (None, (1, 1), 1),
    "Softplus": (None, (1, 1), 1),
    "Hardswish": (None, (1, 1), 1),
    "Softmax": (None, (1, 1), 1),
    "LogSoftmax": (None, (1, 1), 1),
    "Identity": (None, (1, 1), 1),
    "Flatten": (None, (1, 1), 1),
    "Unflatten": (None, (1, 1), 1),
    "MaxPool1d": (None, (1, 1), lambda a: 2 if a.get("return_indices") else 1),
    "MaxPool2d": (None, (1, 1), lambda a: 2 if a.get("return_indices") else 1),
    "AvgPool1d": (None, (1, 1), 1),
    "AvgPool2d": (None, (1, 1), 1),
    "AdaptiveAvgPool1d": (None, (1, 1), 1),
    "AdaptiveAvgPool2d": (None, (1, 1), 1),
    "AdaptiveMaxPool1d": (None, (1, 1), 1),
    "AdaptiveMaxPool2d": (None, (1, 1), 1),
    "Upsample": (None, (1, 1), 1),
    "PixelShuffle": (None, (1, 1), 1),
    "ZeroPad2d": (None, (1, 1), 1),
}
# torch annotates these with types a YAML value cannot be: we narrow them
_NARROW = {("TransformerEncoderLayer", "activation"): typing.Literal["relu", "gelu"]}


def _module_args(name: str, cls: type) -> dict[str, Arg]:
    if name in _MANUAL:
        return {a.name: a for a in _MANUAL[name]}
    hints = typing.get_type_hints(cls.__init__)
    out = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in _SKIP or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = _NARROW.get((name, p.name), hints.get(p.name, typing.Any))
        default = p.default
        if callable(default) and not isinstance(default, type):
            default = getattr(default, "__name__", REQUIRED)
        if ann is typing.Any and default not in (REQUIRED, None):
            ann = type(default) if type(default) is not int else Union[int, float] if name == "Upsample" else int
        out[p.name] = Arg(p.name, ann, default)
    return out


# --- tensor functions ----------------------------------------------------------------------

_INT_OR_NONE = Optional[int]
_DIMS = Union[int, list[int], None]


def _fn(target: Callable, inputs=(1, 1), doc: str = "", **args: tuple[Any, Any]) -> tuple:
    return target, inputs, {k: Arg(k, t, d) for k, (t, d) in args.items()}, doc


_BINARY = dict(other=(Union[int, float], None))
_FUNCTIONS: dict[str, tuple] = {
    "add": _fn(torch.add, (1, 2), "a + b, or a + other", **_BINARY),
    "sub": _fn(torch.sub, (1, 2), "a - b, or a - other", **_BINARY),
    "mul": _fn(torch.mul, (1, 2), "a * b, or a * other", **_BINARY),
    "div": _fn(torch.div, (1, 2), "a / b, or a / other", **_BINARY),
    "pow": _fn(torch.pow, (1, 2), "a ** b, or a ** other", **_BINARY),
    "maximum": _fn(torch.maximum, (2, 2), "element-wise max of a and b"),
    "minimum": _fn(torch.minimum, (2, 2), "element-wise min of a and b"),
    "matmul": _fn(torch.matmul, (2, 2), "a @ b"),
    "transpose": _fn(torch.transpose, doc="swap two dims", dim0=(int, REQUIRED), dim1=(int, REQUIRED)),
    "permute": _fn(torch.permute, doc="reorder dims", dims=(list[int], REQUIRED)),
    "reshape": _fn(torch.reshape, doc="reshape; symbolic dims of the input may be named",
                   shape=(list[Union[int, str]], REQUIRED)),
    "flatten": _fn(torch.flatten, doc="flatten dims start_dim..end_dim", start_dim=(int, 0), end_dim=(int, -1)),
    "cat": _fn(torch.cat, (1, -1), "concatenate along dim", dim=(int, 0)),
    "stack": _fn(torch.stack, (1, -1), "stack along a new dim", dim=(int, 0)),
    "mean": _fn(torch.mean, doc="mean over dims", dim=(_DIMS, None), keepdim=(bool, False)),
    "sum": _fn(torch.sum, doc="sum over dims", dim=(_DIMS, None), keepdim=(bool, False)),
    "amax": _fn(torch.amax, doc="max over dims", dim=(Union[int, list[int]], REQUIRED), keepdim=(bool, False)),
    "softmax": _fn(torch.softmax, doc="softmax over dim", dim=(int, REQUIRED)),
    "log_softmax": _fn(torch.log_softmax, doc="log-softmax over dim", dim=(int, REQUIRED)),
    "relu": _fn(torch.relu, doc="max(x, 0)"),
    "gelu": _fn(F.gelu, doc="GELU", approximate=(typing.Literal["none", "tanh"], "none")),
    "silu": _fn(F.silu, doc="x * sigmoid(x)"),
    "tanh": _fn(torch.tanh, doc="tanh"),
    "sigmoid": _fn(torch.sigmoid, doc="sigmoid"),
    "exp": _fn(torch.exp, doc="exp"),
    "log": _fn(torch.log, doc="natural log"),
    "sqrt": _fn(torch.sqrt, doc="square root"),
    "abs": _fn(torch.abs, doc="absolute value"),
    "neg": _fn(torch.neg, doc="-x"),
    "squeeze": _fn(torch.squeeze, doc="drop size-1 dims", dim=(_INT_OR_NONE, None)),
    "unsqueeze": _fn(torch.unsqueeze, doc="insert a size-1 dim", dim=(int, REQUIRED)),
    "scaled_dot_product_attention": _fn(
        F.scaled_dot_product_attention, (3, 4), "softmax(q k^T * scale) v; a 4th ref is the mask",
        dropout_p=(float, 0.0), is_causal=(bool, False), scale=(Optional[float], None)),
}


def _build_registry() -> dict[str, OpDef]:
    reg: dict[str, OpDef] = {}
    for name, (infer, inputs, outputs) in _MODULES.items():
        cls = getattr(nn, name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        reg[name] = OpDef(name, "module", cls, _module_args(name, cls), inputs, infer, outputs, doc=doc)
    for name, (target, inputs, args, doc) in _FUNCTIONS.items():
        reg[name] = OpDef(name, "function", target, args, inputs, doc=doc)
    return reg


REGISTRY: dict[str, OpDef] = _build_registry()
_plugins_loaded = False


def registry() -> dict[str, OpDef]:
    """Every op, with installed `specc.ops` plugins loaded on first use."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        from .plugins import load_plugins
        load_plugins(REGISTRY)
    return REGISTRY


_ACRONYMS = {"ReLU": "Relu", "GELU": "Gelu", "SiLU": "Silu", "ELU": "Elu", "RMS": "Rms", "GRU": "Gru",
             "LSTM": "Lstm", "RNN": "Rnn"}


def snake(name: str) -> str:
    """`LayerNorm` -> `layer_norm`, `ReLU` -> `relu`, `Conv2d` -> `conv2d`: the default node name."""
    for k, v in _ACRONYMS.items():
        name = name.replace(k, v)
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (name[i - 1].islower() or name[i - 1].isdigit()):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def signature(op: OpDef) -> str:
    """`Linear(in_features: int [inferred], out_features: int, bias: bool = True)`."""
    from .types import describe
    parts = []
    for a in op.args.values():
        s = f"{a.name}: {describe(a.type) or 'any'}"
        if op.infer and op.infer.arg == a.name:
            s += " [inferred]"
        elif not a.required:
            s += f" = {a.default!r}"
        parts.append(s)
    return f"{op.name}({', '.join(parts)})"
