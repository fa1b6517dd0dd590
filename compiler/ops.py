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
from .spec import DTYPES

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


@dataclass(frozen=True)
class Problem:
    """What `OpDef.validate` finds wrong with a node's arguments: located at `arg` (else the node)."""

    message: str
    hint: str
    arg: str = ""


Outputs = Any  # int, or a function of the node's args giving an int (None: it depends on the input's shape)
PER_INPUT = "per input"  # an `outputs` value: one output per input (meshgrid)


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
    validate: Callable[[dict, int], "Problem | None"] | None = field(default=None, compare=False)
    sizes: tuple[str, ...] = ()  # arguments that may hold dims and expressions of them (`end: time - 1`)
    formats: frozenset = frozenset(FORMATS)
    doc: str = ""
    plugin: str = ""  # the distribution that registered it

    @property
    def inputs(self) -> tuple[int, int]:
        """(min, max) refs in `from:`; max -1 means any number."""
        return (self.required, -1 if self.variadic else len(self.slots))

    def n_outputs(self, args: dict, n_inputs: int | None = None) -> int | None:
        if self.outputs == PER_INPUT:
            return n_inputs
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
    validate: Callable[[dict, int], Problem | None] | None = None
    sizes: tuple[str, ...] = ()


def problems(op: OpDef, args: dict, n_inputs: int) -> list[Problem]:
    """What is wrong with a node's evaluated arguments beyond their types: size texts that are not
    dim expressions, and the op's own rules (clamp needs a bound, ...)."""
    from .dimexpr import DimExprError, parse
    found = []
    for k in op.sizes:
        for v in args.get(k) if isinstance(args.get(k), list) else [args.get(k)]:
            try:
                parse(v) if isinstance(v, str) else None
            except DimExprError as e:
                found.append(Problem(str(e), "a size is an int, a dim (time) or an expression such as time - 1; "
                                     "params go in ${...}", k))
    bad = op.validate(args, n_inputs) if op.validate is not None and not found else None
    return found + ([bad] if bad is not None else [])


def _a(name: str, type_: str, default: Any = REQUIRED) -> Arg:
    return Arg(name, type_, default)


_OTHER = (_a("other", "int | float", None),)
_LEFT = (_a("input", "int | float", None),)  # a number on the left: `{op: pow, input: 10000.0}` is 10000 ** x
_DIMS = "int | [int, ...] | null"
_SIZE = "int | str"  # an int, a dim, or an expression of dims (`time - 1`)
_SIZES = "[int | str, ...]"
DTYPE = " | ".join(repr(d) for d in DTYPES)


def _binary(target: str, doc: str, left: bool = False) -> _Fn:
    return _Fn(target, doc, _OTHER + (_LEFT if left else ()), ("input", "other"), 1, bind=calls.binary)


def _compare(target: str, sign: str) -> _Fn:
    return _binary(target, f"a {sign} b, or a {sign} other (bool)")


def _clamp_bounds(args: dict, n_inputs: int) -> Problem | None:
    if args.get("min") is None and args.get("max") is None:
        return Problem("clamp needs min, max or both", "add min: 0.0 or max: 1.0")
    return None


def _arange_form(args: dict, n_inputs: int) -> Problem | None:
    """arange is positions along `dim` of its input, or a range up to `end:`; not both, not neither."""
    if n_inputs:
        if args.get("dim") is None:
            return Problem("arange of an input needs dim: the positions along that dim", "add dim: 1")
        extra = next((k for k in ("start", "end", "step") if k in args), "")
        if extra:
            return Problem(f"arange of an input counts along dim; {extra}: belongs to a plain range",
                           "drop from: for a range start..end, or drop " + extra, extra)
        return None
    if args.get("end") is None and args.get("dim") is not None:
        return Problem("arange with dim: counts the positions of an input, which from: must name",
                       "add from: x (arange reads no input unless from: says which)")
    if args.get("end") is None:
        return Problem("arange needs end: (a range start..end), or from: an input and dim: (its positions)",
                       "add end: time, or from: x and dim: 1")
    if "dim" in args:
        return Problem("dim: is for arange of an input (its positions along that dim)",
                       "add from: x, or drop dim:", "dim")
    if args.get("step") == 0:
        return Problem("arange's step must not be 0", "step: 1", "step")
    return None


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
    "add": _binary("torch.add", "a + b, a + other, or input + a", left=True),
    "sub": _binary("torch.sub", "a - b, a - other, or input - a", left=True),
    "mul": _binary("torch.mul", "a * b, a * other, or input * a", left=True),
    "div": _binary("torch.div", "a / b, a / other, or input / a", left=True),
    "pow": _binary("torch.pow", "a ** b, a ** other, or input ** a (a number's powers)", left=True),
    "maximum": _Fn("torch.maximum", "element-wise max of a and b", slots=("input", "other"), required=2),
    "minimum": _Fn("torch.minimum", "element-wise min of a and b", slots=("input", "other"), required=2),
    "matmul": _Fn("torch.matmul", "a @ b", slots=("input", "other"), required=2),
    "einsum": _Fn("torch.einsum", "Einstein summation over the inputs", (_a("equation", "str"),), ("operands",),
                  variadic=True, bind=calls.einsum),
    "transpose": _unary("torch.transpose", "swap two dims", _a("dim0", "int"), _a("dim1", "int")),
    "permute": _unary("torch.permute", "reorder dims", _a("dims", "[int, ...]")),
    "reshape": _Fn("torch.reshape", "reshape; dims and expressions of them may be named", (_a("shape", _SIZES),),
                   bind=calls.sized("shape"), sizes=("shape",)),
    "expand": _Fn("expand", "broadcast size-1 dims (x.expand); -1 keeps a dim, symbolic dims may be named",
                  (_a("size", _SIZES),), bind=calls.sized("size", method=True), sizes=("size",)),
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
    "narrow": _Fn("torch.narrow", "length elements from start along dim (start, length: dims allowed)",
                  (_a("dim", "int"), _a("start", _SIZE), _a("length", _SIZE)), bind=calls.narrow,
                  sizes=("start", "length")),
    "slice": _Fn("operator.getitem", "x[..., start:end:step] along dim (bounds: dims allowed, `end: time - 1`)",
                 (_a("dim", "int"), _a("start", "int | str | null", None), _a("end", "int | str | null", None),
                  _a("step", "int | null", None)), bind=calls.slicing, sizes=("start", "end")),
    "arange": _Fn("torch.arange", "positions 0 .. n-1 along dim of the input (int64), or, without from:, the range "
                  "start, start+step, .. < end (dims allowed)",
                  (_a("dim", "int | null", None), _a("start", _SIZE, 0), _a("end", "int | str | null", None),
                   _a("step", "int", 1), _a("dtype", DTYPE + " | null", None)), ("input",), 0,
                  bind=calls.arange, validate=_arange_form, sizes=("start", "end")),
    "full": _Fn("torch.full", "a tensor of shape (dims and expressions allowed) filled with fill_value",
                (_a("shape", _SIZES), _a("fill_value", "int | float | bool"), _a("dtype", DTYPE + " | null", None)),
                (), 0, bind=calls.full, sizes=("shape",)),
    "zeros_like": _Fn("torch.zeros_like", "zeros of the input's shape (and dtype, unless given)",
                      (_a("dtype", DTYPE + " | null", None),), bind=calls.like),
    "ones_like": _Fn("torch.ones_like", "ones of the input's shape (and dtype, unless given)",
                     (_a("dtype", DTYPE + " | null", None),), bind=calls.like),
    "to": _Fn("to", "the input cast to dtype (x.to)", (_a("dtype", DTYPE),), bind=calls.cast),
    "index_select": _Fn("torch.index_select", "entries of input at index (int64, any shape) along dim: x[:, index]",
                        (_a("dim", "int", 0),), ("input", "index"), 2, bind=calls.index_select),
    "meshgrid": _Fn("torch.meshgrid", "coordinate grids of 1-D inputs; a tuple, one grid per input",
                    (_a("indexing", "'ij' | 'xy'", "ij"),), ("tensors",), variadic=True, outputs=PER_INPUT,
                    bind=calls.meshgrid),
    "repeat_interleave": _unary("torch.repeat_interleave", "each element repeats times along dim",
                                _a("repeats", "int"), _a("dim", "int")),
    "cumsum": _unary("torch.cumsum", "running sum along dim", _a("dim", "int")),
    "outer": _Fn("torch.outer", "outer product of two 1-D inputs", slots=("input", "vec2"), required=2),
    "tril": _unary("torch.tril", "the lower triangle (on and below diagonal) of the last two dims",
                   _a("diagonal", "int", 0)),
    "triu": _unary("torch.triu", "the upper triangle (on and above diagonal) of the last two dims",
                   _a("diagonal", "int", 0)),
    "eq": _compare("torch.eq", "=="), "ne": _compare("torch.ne", "!="), "lt": _compare("torch.lt", "<"),
    "le": _compare("torch.le", "<="), "gt": _compare("torch.gt", ">"), "ge": _compare("torch.ge", ">="),
    "logical_and": _Fn("torch.logical_and", "a and b (bool)", slots=("input", "other"), required=2),
    "logical_or": _Fn("torch.logical_or", "a or b (bool)", slots=("input", "other"), required=2),
    "logical_not": _unary("torch.logical_not", "not a (bool)"),
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
    "rsqrt": _unary("torch.rsqrt", "1 / sqrt(x)"),
    "reciprocal": _unary("torch.reciprocal", "1 / x"),
    "cos": _unary("torch.cos", "cosine"),
    "sin": _unary("torch.sin", "sine"),
    "clamp": _Fn("torch.clamp", "x limited to [min, max] (either may be left out)",
                 (_a("min", "int | float | null", None), _a("max", "int | float | null", None)), validate=_clamp_bounds),
    "abs": _unary("torch.abs", "absolute value"),
    "neg": _unary("torch.neg", "-x"),
    "squeeze": _unary("torch.squeeze", "drop size-1 dims", _a("dim", "int | null", None)),
    "unsqueeze": _unary("torch.unsqueeze", "insert a size-1 dim", _a("dim", "int")),
    "scaled_dot_product_attention": _Fn(
        "torch.nn.functional.scaled_dot_product_attention", "softmax(q k^T * scale) v; a 4th ref is the mask (bool: "
        "True attends, or float: added); enable_gqa: key/value may have fewer heads",
        (_a("dropout_p", "float", 0.0), _a("is_causal", "bool", False), _a("scale", "float | null", None),
         _a("enable_gqa", "bool", False)),
        ("query", "key", "value", "attn_mask"), 3, specialize=_sdpa_variant),
}

# --- tensors a node owns --------------------------------------------------------------------

_TENSOR_ARGS = (_a("shape", "[int, ...]"), _a("init", "any", "zeros"))
TENSORS: dict[str, tuple[str, tuple[Arg, ...]]] = {
    "Parameter": ("a learnable tensor (nn.Parameter); init: zeros | ones | {normal: std} | {uniform: [a, b]} | "
                  "{trunc_normal: std} | {constant: v} | xavier_uniform | kaiming_normal | ...",
                  _TENSOR_ARGS + (_a("requires_grad", "bool", True),)),
    "Buffer": ("a tensor saved with the weights but not learned (register_buffer); persistent: false keeps it out "
               "of the state_dict", _TENSOR_ARGS + (_a("persistent", "bool", True), _a("dtype", DTYPE, "float32"))),
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
                          None, f.outputs, f.bind, specialize=f.specialize, validate=f.validate, sizes=f.sizes,
                          doc=f.doc)
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
