"""The closed op registry: CamelCase `torch.nn` modules, lowercase tensor functions, and the
`Parameter`/`Buffer` tensors a node can own.

Nothing outside this table (and installed `specc.ops` plugins) resolves: a spec cannot name a
dotted import path. Each op carries its argument schema (torch's, recorded in `catalog.json`)
and its calling convention (`compiler.calls`), which shape inference, lowering and eject share.
This module does not import torch: targets are qualified names resolved by the backends.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from . import calls
from .catalog import REQUIRED, module_args

FORMATS = ("torchscript", "pt2", "compile", "onnx")


@dataclass(frozen=True)
class Arg:
    name: str
    type: str = "any"  # in the compiler.types language
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default == REQUIRED


@dataclass(frozen=True)
class Infer:
    """Which argument is the input's size, and which input dim holds it."""

    arg: str
    dim: int


Outputs = Any  # int, or a function of the node's args giving an int (None: it depends on the input's shape)


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str  # "module" | "function" | "tensor"
    target: Any  # a qualified name ("torch.nn.Linear", "torch.add"), or a plugin's class
    args: dict[str, Arg]
    slots: tuple[str, ...] = ("input",)  # input names, in order; `from:` fills them positionally or by name
    required: int = 1  # how many slots must be filled
    variadic: bool = False  # any number of inputs (cat, stack, einsum)
    infer: Infer | None = None
    outputs: Outputs = 1  # >1: the op returns a tuple
    bind: calls.Convention = calls.plain
    call_args: frozenset[str] = frozenset()  # module args passed in forward(), not to the constructor
    specialize: Callable[[dict], "OpDef"] | None = field(default=None, compare=False)
    formats: frozenset = frozenset(FORMATS)
    doc: str = ""
    plugin: str = ""  # the distribution that registered it

    @property
    def inputs(self) -> tuple[int, int]:
        """(min, max) refs in `from:`; max -1 means any number."""
        return (self.required, -1 if self.variadic else len(self.slots))

    def n_outputs(self, args: dict) -> int | None:
        return self.outputs(args) if callable(self.outputs) else self.outputs

    def ctor_args(self, args: dict) -> dict:
        """The arguments that construct the module (call-time ones and specc's own left out)."""
        return {k: v for k, v in args.items() if k not in self.call_args}


# --- modules -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Module:
    infer: Infer | None = None
    slots: tuple[str, ...] = ("input",)
    required: int = 1
    outputs: Outputs = 1
    bind: calls.Convention = calls.module
    call_args: tuple[Arg, ...] = ()


def _in(arg: str, dim: int) -> _Module:
    return _Module(Infer(arg, dim))


_POOL_IDX = _Module(outputs=lambda a: 2 if a.get("return_indices") else 1)
_RNN = _Module(Infer("input_size", -1), ("input", "hx"), 1, 2)
_PLAIN = _Module()
MODULES: dict[str, _Module] = {
    "Linear": _in("in_features", -1), "Bilinear": _Module(slots=("input1", "input2"), required=2),
    "Conv1d": _in("in_channels", -2), "Conv2d": _in("in_channels", -3), "Conv3d": _in("in_channels", -4),
    "ConvTranspose1d": _in("in_channels", -2), "ConvTranspose2d": _in("in_channels", -3),
    "ConvTranspose3d": _in("in_channels", -4),
    "BatchNorm1d": _in("num_features", 1), "BatchNorm2d": _in("num_features", -3),
    "BatchNorm3d": _in("num_features", -4), "InstanceNorm1d": _in("num_features", -2),
    "InstanceNorm2d": _in("num_features", -3), "LayerNorm": _in("normalized_shape", -1),
    "GroupNorm": _in("num_channels", 1), "RMSNorm": _in("normalized_shape", -1),
    "Dropout": _PLAIN, "Dropout1d": _PLAIN, "Dropout2d": _PLAIN, "Embedding": _PLAIN,
    "GRU": _RNN, "LSTM": _Module(Infer("input_size", -1), outputs=2), "RNN": _RNN,
    "MultiheadAttention": _Module(Infer("embed_dim", -1), ("query", "key", "value", "key_padding_mask", "attn_mask"),
                                  1, 2, calls.attention,
                                  (Arg("need_weights", "bool", True), Arg("average_attn_weights", "bool", True),
                                   Arg("is_causal", "bool", False))),
    "TransformerEncoderLayer": _Module(Infer("d_model", -1), ("src", "src_mask", "src_key_padding_mask"), 1, 1,
                                       calls.encoder_layer, (Arg("is_causal", "bool", False),)),
    "ReLU": _PLAIN, "ReLU6": _PLAIN, "GELU": _PLAIN, "SiLU": _PLAIN, "Mish": _PLAIN, "Tanh": _PLAIN,
    "Sigmoid": _PLAIN, "LeakyReLU": _PLAIN, "ELU": _PLAIN, "Softplus": _PLAIN, "Hardswish": _PLAIN,
    "Hardsigmoid": _PLAIN, "PReLU": _PLAIN, "Softmax": _PLAIN, "LogSoftmax": _PLAIN, "Identity": _PLAIN,
    "Flatten": _PLAIN, "Unflatten": _PLAIN, "MaxPool1d": _POOL_IDX, "MaxPool2d": _POOL_IDX,
    "AvgPool1d": _PLAIN, "AvgPool2d": _PLAIN, "AdaptiveAvgPool1d": _PLAIN, "AdaptiveAvgPool2d": _PLAIN,
    "AdaptiveMaxPool1d": _POOL_IDX, "AdaptiveMaxPool2d": _POOL_IDX, "Upsample": _PLAIN, "PixelShuffle": _PLAIN,
    "ZeroPad2d": _PLAIN,
}


def _module_op(name: str, m: _Module) -> OpDef:
    args = {a: Arg(a, t, d) for a, t, d in module_args(name)}
    args.update({a.name: a for a in m.call_args})
    return OpDef(name, "module", f"torch.nn.{name}", args, m.slots, m.required, False, m.infer, m.outputs, m.bind,
                 frozenset(a.name for a in m.call_args), doc=_DOCS.get(name, ""))


# --- tensor functions ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Fn:
    target: str
    doc: str
    args: tuple[Arg, ...] = ()
    slots: tuple[str, ...] = ("input",)
    required: int = 1
    variadic: bool = False
    outputs: Outputs = 1
    bind: calls.Convention = calls.plain
    specialize: Callable[[dict], OpDef] | None = None


def _a(name: str, type_: str, default: Any = REQUIRED) -> Arg:
    return Arg(name, type_, default)


_OTHER = (_a("other", "int | float", None),)
_DIMS = "int | [int, ...] | null"
_SIZES = "[int | str, ...]"


def _binary(target: str, doc: str) -> _Fn:
    return _Fn(target, doc, _OTHER, ("input", "other"), 1, bind=calls.binary)


def _unary(target: str, doc: str, *args: Arg) -> _Fn:
    return _Fn(target, doc, args)


def _split_count(args: dict) -> int | None:
    size = args.get("split_size")
    return len(size) if isinstance(size, list) else None


def _sdpa_variant(args: dict) -> OpDef:
    """With dropout, attention must know train from eval mode: a parameterless module does."""
    op = REGISTRY["scaled_dot_product_attention"]
    if not args.get("dropout_p"):
        return op
    return replace(op, kind="module", target="compiler.modules.ScaledDotProductAttention", bind=calls.module,
                   specialize=None)


FUNCTIONS: dict[str, _Fn] = {
    "add": _binary("torch.add", "a + b, or a + other"),
    "sub": _binary("torch.sub", "a - b, or a - other"),
    "mul": _binary("torch.mul", "a * b, or a * other"),
    "div": _binary("torch.div", "a / b, or a / other"),
    "pow": _binary("torch.pow", "a ** b, or a ** other"),
    "maximum": _Fn("torch.maximum", "element-wise max of a and b", slots=("input", "other"), required=2),
    "minimum": _Fn("torch.minimum", "element-wise min of a and b", slots=("input", "other"), required=2),
    "matmul": _Fn("torch.matmul", "a @ b", slots=("input", "other"), required=2),
    "einsum": _Fn("torch.einsum", "Einstein summation over the inputs", (_a("equation", "str"),), ("operands",),
                  variadic=True, bind=calls.einsum),
    "transpose": _unary("torch.transpose", "swap two dims", _a("dim0", "int"), _a("dim1", "int")),
    "permute": _unary("torch.permute", "reorder dims", _a("dims", "[int, ...]")),
    "reshape": _Fn("torch.reshape", "reshape; symbolic dims may be named", (_a("shape", _SIZES),),
                   bind=calls.sized("shape")),
    "expand": _Fn("expand", "broadcast size-1 dims (x.expand); -1 keeps a dim, symbolic dims may be named",
                  (_a("size", _SIZES),), bind=calls.sized("size", method=True)),
    "flatten": _unary("torch.flatten", "flatten dims start_dim..end_dim", _a("start_dim", "int", 0),
                      _a("end_dim", "int", -1)),
    "cat": _Fn("torch.cat", "concatenate along dim", (_a("dim", "int", 0),), ("tensors",), variadic=True,
               bind=calls.sequence),
    "stack": _Fn("torch.stack", "stack along a new dim", (_a("dim", "int", 0),), ("tensors",), variadic=True,
                 bind=calls.sequence),
    "split": _Fn("torch.split", "pieces of split_size (or of the listed sizes) along dim; a tuple",
                 (_a("split_size", "int | [int, ...]"), _a("dim", "int", 0)), outputs=_split_count,
                 bind=calls.positional("split_size")),
    "chunk": _Fn("torch.chunk", "chunks equal pieces along dim; a tuple", (_a("chunks", "int"), _a("dim", "int", 0)),
                 outputs=lambda a: a.get("chunks")),
    "unbind": _Fn("torch.unbind", "every slice along dim; a tuple", (_a("dim", "int", 0),), outputs=lambda a: None),
    "select": _unary("torch.select", "the slice at index along dim (the dim goes away)", _a("dim", "int"),
                     _a("index", "int")),
    "narrow": _unary("torch.narrow", "length elements from start along dim", _a("dim", "int"), _a("start", "int"),
                     _a("length", "int")),
    "slice": _Fn("operator.getitem", "x[..., start:end:step] along dim",
                 (_a("dim", "int"), _a("start", "int | null", None), _a("end", "int | null", None),
                  _a("step", "int | null", None)), bind=calls.slicing),
    "arange": _Fn("torch.arange", "positions 0 .. n-1 along dim of the input (int64)", (_a("dim", "int"),),
                  bind=calls.arange),
    "where": _Fn("torch.where", "input where condition, else other (a ref or a number)", _OTHER,
                 ("condition", "input", "other"), 2, bind=calls.where),
    "masked_fill": _Fn("torch.masked_fill", "input with value where mask is true", (_a("value", "int | float"),),
                       ("input", "mask"), 2),
    "mean": _unary("torch.mean", "mean over dims", _a("dim", _DIMS, None), _a("keepdim", "bool", False)),
    "sum": _unary("torch.sum", "sum over dims", _a("dim", _DIMS, None), _a("keepdim", "bool", False)),
    "amax": _unary("torch.amax", "max over dims", _a("dim", "int | [int, ...]"), _a("keepdim", "bool", False)),
    "softmax": _unary("torch.softmax", "softmax over dim", _a("dim", "int")),
    "log_softmax": _unary("torch.log_softmax", "log-softmax over dim", _a("dim", "int")),
    "relu": _unary("torch.relu", "max(x, 0)"),
    "gelu": _unary("torch.nn.functional.gelu", "GELU", _a("approximate", "'none' | 'tanh'", "none")),
    "silu": _unary("torch.nn.functional.silu", "x * sigmoid(x)"),
    "tanh": _unary("torch.tanh", "tanh"),
    "sigmoid": _unary("torch.sigmoid", "sigmoid"),
    "exp": _unary("torch.exp", "exp"),
    "log": _unary("torch.log", "natural log"),
    "sqrt": _unary("torch.sqrt", "square root"),
    "abs": _unary("torch.abs", "absolute value"),
    "neg": _unary("torch.neg", "-x"),
    "squeeze": _unary("torch.squeeze", "drop size-1 dims", _a("dim", "int | null", None)),
    "unsqueeze": _unary("torch.unsqueeze", "insert a size-1 dim", _a("dim", "int")),
    "scaled_dot_product_attention": _Fn(
        "torch.nn.functional.scaled_dot_product_attention", "softmax(q k^T * scale) v; a 4th ref is the mask",
        (_a("dropout_p", "float", 0.0), _a("is_causal", "bool", False), _a("scale", "float | null", None)),
        ("query", "key", "value", "attn_mask"), 3, specialize=_sdpa_variant),
}

# --- tensors a node owns --------------------------------------------------------------------

_TENSOR_ARGS = (_a("shape", "[int, ...]"), _a("init", "any", "zeros"))
TENSORS: dict[str, tuple[str, tuple[Arg, ...]]] = {
    "Parameter": ("a learnable tensor (nn.Parameter); init: zeros | ones | {normal: std} | {uniform: [a, b]} | "
                  "{trunc_normal: std} | {constant: v} | xavier_uniform | kaiming_normal | ...",
                  _TENSOR_ARGS + (_a("requires_grad", "bool", True),)),
    "Buffer": ("a tensor saved with the weights but not learned (register_buffer)",
               _TENSOR_ARGS + (_a("persistent", "bool", True), _a("dtype", "'float32' | 'int64' | 'bool'", "float32"))),
}

_DOCS = {
    "Linear": "y = x A^T + b", "Conv1d": "1-D convolution", "Conv2d": "2-D convolution", "Conv3d": "3-D convolution",
    "BatchNorm2d": "batch normalization over (N, C, H, W)", "LayerNorm": "layer normalization over the last dims",
    "Embedding": "a lookup table of embeddings", "MultiheadAttention": "multi-head attention (query, key, value)",
    "TransformerEncoderLayer": "self-attention and feed-forward, as in Attention Is All You Need",
}


def _build() -> dict[str, OpDef]:
    reg: dict[str, OpDef] = {name: _module_op(name, m) for name, m in MODULES.items()}
    for name, f in FUNCTIONS.items():
        reg[name] = OpDef(name, "function", f.target, {a.name: a for a in f.args}, f.slots, f.required, f.variadic,
                          None, f.outputs, f.bind, specialize=f.specialize, doc=f.doc)
    for name, (doc, args) in TENSORS.items():
        reg[name] = OpDef(name, "tensor", name, {a.name: a for a in args}, (), 0, False, None, 1, calls.tensor, doc=doc)
    return reg


REGISTRY: dict[str, OpDef] = _build()
_plugins_loaded = False


def registry() -> dict[str, OpDef]:
    """Every op, with installed `specc.ops` plugins loaded (importing them) on first use."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        from .plugins import load_plugins
        load_plugins(REGISTRY)
    return REGISTRY


def lookup(name: str) -> OpDef | None:
    """One op by name; plugins are loaded only for a name that is not built in."""
    return REGISTRY.get(name) or registry().get(name)


_ACRONYMS = {"ReLU": "Relu", "GELU": "Gelu", "SiLU": "Silu", "ELU": "Elu", "RMS": "Rms", "GRU": "Gru",
             "LSTM": "Lstm", "RNN": "Rnn", "PReLU": "Prelu"}


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
    parts = []
    for a in op.args.values():
        s = f"{a.name}: {a.type}"
        if op.infer and op.infer.arg == a.name:
            s += " [inferred]"
        elif not a.required:
            s += f" = {a.default!r}"
        parts.append(s)
    return f"{op.name}({', '.join(parts)})"
