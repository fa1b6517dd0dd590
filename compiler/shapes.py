"""Shape inference before any weight exists, on the `meta` device.

Each symbolic dim gets a distinct prime size in two separate runs (A and B). A dim that is the
same in both runs is a fixed size; one that follows a symbol (`batch`, `3*batch`, `time+2`) is
written with that symbol. Modules are built on `meta`, so no parameter memory is allocated,
and the parameter bytes are known before anything real is created.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import Collector, SpecError
from .ops import OpDef
from .resolve import GNode, Graph, Val

_PRIMES_A = [10007, 10009, 10037, 10039, 10061, 10067, 10069, 10079, 10091, 10093, 10099, 10103]
_PRIMES_B = [20011, 20021, 20023, 20029, 20047, 20051, 20063, 20071, 20089, 20101, 20107, 20113]
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}

Dim = Any  # int or a symbolic string such as "batch" or "16*batch"
Shape = tuple  # of Dim; a tuple output is a tuple of Shapes


@dataclass
class NodeInfo:
    shape: Any  # Shape, or a tuple of Shapes for tuple outputs
    params: int = 0
    trainable: int = 0
    bytes: int = 0  # parameters and buffers
    args: dict[str, Any] = field(default_factory=dict)  # with inferred sizes filled in


@dataclass
class TypedGraph:
    graph: Graph
    info: dict[str, NodeInfo]  # by node path and input name
    symbols: list[str]

    @property
    def parameters(self) -> int:
        return sum(i.params for i in self.info.values())

    @property
    def trainable(self) -> int:
        return sum(i.trainable for i in self.info.values())

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.info.values())

    def shape_of(self, v: Val) -> Any:
        s = self.info[v.node].shape
        return s if v.index is None else s[v.index]


def fmt_shape(shape: Any) -> str:
    """`(batch, 16, 64)`; tuple outputs as `(batch, 16, 64), (1, batch, 64)`."""
    if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
        return ", ".join(fmt_shape(s) for s in shape)
    return "(" + ", ".join(str(d) for d in shape) + ")"


class _Sampler:
    def __init__(self, symbols: list[str]):
        if len(symbols) > len(_PRIMES_A):
            raise ValueError("too many symbolic dims")
        self.a = dict(zip(symbols, _PRIMES_A))
        self.b = dict(zip(symbols, _PRIMES_B))

    def unsample(self, text: str) -> str:
        """Torch's messages speak of the sample sizes; put the symbolic names back."""
        for name, size in self.a.items():
            text = re.sub(rf"\b{size}\b", name, text)
        return text

    def render(self, x: int, y: int) -> Dim:
        if x == y:
            return x
        for s, sa in self.a.items():
            sb = self.b[s]
            if x % sa == 0 and y % sb == 0 and x // sa == y // sb:
                k = x // sa
                return s if k == 1 else f"{k}*{s}"
            if x - sa == y - sb:
                d = x - sa
                return f"{s}+{d}" if d > 0 else f"{s}-{-d}"
            if sa % x == 0 and sb % y == 0 and sa // x == sb // y:
                return f"{s}/{sa // x}"
        return "?"


def _render(a: Any, b: Any, s: _Sampler) -> Any:
    if isinstance(a, torch.Tensor):
        return tuple(s.render(int(x), int(y)) for x, y in zip(a.shape, b.shape))
    if isinstance(a, (tuple, list)):
        return tuple(_render(x, y, s) for x, y in zip(a, b))
    return ()


def infer_shapes(graph: Graph) -> TypedGraph:
    """Run every node on meta tensors; raise one `SpecError` listing every shape error found."""
    symbols = list(dict.fromkeys(d for i in graph.inputs.values() for d in i.shape if isinstance(d, str)))
    sampler = _Sampler(symbols)
    c = Collector()
    env_a: dict[str, Any] = {}
    env_b: dict[str, Any] = {}
    info: dict[str, NodeInfo] = {}
    for name, inp in graph.inputs.items():
        dtype = DTYPES[inp.dtype]
        try:
            env_a[name] = torch.empty(*[sampler.a.get(d, d) for d in inp.shape], dtype=dtype, device="meta")
            env_b[name] = torch.empty(*[sampler.b.get(d, d) for d in inp.shape], dtype=dtype, device="meta")
        except (RuntimeError, ValueError, OverflowError) as e:
            c.error(inp.loc, f"input '{name}' cannot be created: {_first_line(e)}", "use smaller dims")
            continue
        info[name] = NodeInfo(tuple(inp.shape))
    memo: dict[Any, tuple] = {}  # repeated blocks meet the same op, arguments and shapes many times
    for node in graph.nodes:
        xa = [_get(env_a, v) for v in node.inputs]
        xb = [_get(env_b, v) for v in node.inputs]
        if any(x is None for x in xa):
            continue  # an input failed; its error is already reported
        key = _memo_key(node, xa, xb)
        if key is not None and key in memo:
            a, b, shape, nparams, ntrain, nbytes, args = memo[key]
        else:
            try:
                args = _infer_arg(node, xa, xb, sampler)
                a, b, module = _run(node, args, xa, xb, sampler)
            except _ShapeError as e:
                c.error(node.loc, e.message, e.hint)
                continue
            nparams = ntrain = nbytes = 0
            if module is not None:
                for p in module.parameters():
                    nparams += p.numel()
                    ntrain += p.numel() if p.requires_grad else 0
                    nbytes += p.numel() * p.element_size()
                nbytes += sum(b_.numel() * b_.element_size() for b_ in module.buffers())
            shape = _render(a, b, sampler)
            if key is not None:
                memo[key] = (a, b, shape, nparams, ntrain, nbytes, args)
        env_a[node.path], env_b[node.path] = a, b
        info[node.path] = NodeInfo(shape, nparams, ntrain, nbytes, dict(args))
    c.raise_if_any()
    return TypedGraph(graph, info, symbols)


def _sig(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), x.dtype)
    return tuple(_sig(y) for y in x) if isinstance(x, (tuple, list)) else type(x).__name__


def _memo_key(node: GNode, xa: list, xb: list) -> Any:
    try:
        args = repr(sorted(node.args.items()))
    except TypeError:
        return None
    return (node.op.name, args, _sig(xa), _sig(xb))


def _get(env: dict, v: Val) -> Any:
    x = env.get(v.node)
    if x is None or v.index is None:
        return x
    return x[v.index]


class _ShapeError(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


def _desc(node: GNode) -> str:
    return f"{node.op.name} '{node.path}'"


def _shapes_str(xa: list, xb: list, s: _Sampler) -> str:
    return ", ".join(fmt_shape(_render(a, b, s)) if isinstance(a, torch.Tensor) else "(tuple)" for a, b in zip(xa, xb))


def _infer_arg(node: GNode, xa: list, xb: list, s: _Sampler) -> dict[str, Any]:
    """Fill in the input-size argument, or check the one the spec gave."""
    args = dict(node.args)
    infer = node.op.infer
    if infer is None:
        return args
    x, y = xa[0], xb[0]
    if not isinstance(x, torch.Tensor):
        raise _ShapeError(f"{_desc(node)} needs a tensor input, got a tuple", "pick an element with name.K")
    dim = infer.dim
    if x.dim() < (dim + 1 if dim >= 0 else -dim):
        raise _ShapeError(f"{_desc(node)} got input {_shapes_str(xa, xb, s)}, which has too few dims",
                          f"{node.op.name} reads its {infer.arg} from input dim {dim}")
    size_a, size_b = int(x.shape[dim]), int(y.shape[dim])
    if size_a != size_b:
        sym = s.render(size_a, size_b)
        raise _ShapeError(f"{_desc(node)} cannot take {infer.arg} from symbolic dim '{sym}' of input "
                          f"{_shapes_str(xa, xb, s)}", f"{infer.arg} must be a fixed size; make that dim a number")
    given = args.get(infer.arg)
    if given is None:
        args[infer.arg] = size_a
        return args
    expect = given if isinstance(given, int) else tuple(given)
    if isinstance(expect, tuple):
        actual = tuple(int(d) for d in x.shape[-len(expect):]) if x.dim() >= len(expect) else None
        match = actual == expect and all(int(a) == int(b) for a, b in zip(x.shape[-len(expect):], y.shape[-len(expect):]))
    else:
        match = size_a == expect
    if not match:
        raise _ShapeError(f"{_desc(node)} was given {infer.arg}={given} but its input is {_shapes_str(xa, xb, s)}",
                          f"drop {infer.arg}: specc infers it, or fix the size")
    return args


def _call(node: GNode, target: Any, args: dict, xs: list, sample: dict) -> Any:
    op: OpDef = node.op
    if op.kind == "module":
        if op.name == "MultiheadAttention" and len(xs) == 1:
            return target(xs[0], xs[0], xs[0])
        return target(*xs)
    kwargs = dict(args)
    if op.name == "reshape":
        kwargs["shape"] = [sample[d] if isinstance(d, str) else d for d in kwargs["shape"]]
    if "other" in kwargs:
        return target(xs[0], kwargs.pop("other"))
    if op.name in ("cat", "stack"):
        return target(list(xs), **kwargs)
    return target(*xs, **kwargs)


def _run(node: GNode, args: dict, xa: list, xb: list, s: _Sampler) -> tuple[Any, Any, Any]:
    op = node.op
    module = None
    if op.name == "reshape":
        for d in args["shape"]:
            if isinstance(d, str) and d not in s.a:
                raise _ShapeError(f"reshape '{node.path}' names dim '{d}', which no input declares",
                                  f"symbolic dims: {', '.join(s.a) or 'none'}; or use -1")
    if op.kind == "module":
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
        try:
            with torch.device("meta"):
                module = op.target(**kwargs)
        except Exception as e:  # torch validates its own arguments in many ways
            raise _ShapeError(f"cannot create {_desc(node)}: {_first_line(e)}", "check the node's arguments") from None
        target = module
    else:
        target = op.target
    try:
        if op.name in _RNNS and module is not None:  # meta RNNs loop over time: compute their shapes instead
            a, b = _rnn_shape(module, xa[0]), _rnn_shape(module, xb[0])
        else:
            a = _call(node, target, args, xa, s.a)
            b = _call(node, target, args, xb, s.b)
    except Exception as e:
        raise _ShapeError(f"{_desc(node)} cannot take input {_shapes_str(xa, xb, s)}: {s.unsample(_first_line(e))}",
                          _expects(node, args)) from None
    return a, b, module


_FAMILY = [
    ("Linear", "Linear expects (..., in_features={v})"),
    ("ConvTranspose", "{op} expects (N, in_channels={v}, spatial...) or one sample without N"),
    ("Conv", "{op} expects (N, in_channels={v}, spatial...) or one sample without N, each spatial size at least "
             "the kernel after padding"),
    ("BatchNorm", "{op} expects (N, num_features={v}, ...)"),
    ("LayerNorm", "LayerNorm expects (..., {v})"),
    ("RMSNorm", "RMSNorm expects (..., {v})"),
    ("GroupNorm", "GroupNorm expects (N, num_channels={v}, ...)"),
    ("GRU", "GRU expects (batch, time, {v}) with batch_first: true, else (time, batch, {v})"),
    ("LSTM", "LSTM expects (batch, time, {v}) with batch_first: true, else (time, batch, {v})"),
    ("RNN", "RNN expects (batch, time, {v}) with batch_first: true, else (time, batch, {v})"),
    ("MultiheadAttention", "MultiheadAttention expects (batch, seq, {v}) with batch_first: true"),
    ("TransformerEncoderLayer", "TransformerEncoderLayer expects (batch, seq, {v}) with batch_first: true"),
    ("Pool", "{op} expects (N, C, spatial...) with each spatial size at least the kernel"),
    ("matmul", "matmul expects (..., n, k) and (..., k, m)"),
    ("cat", "cat expects the same shape on every dim but the one it joins"),
    ("stack", "stack expects equal shapes"),
    ("reshape", "reshape expects the same number of elements"),
]


_RNNS = ("GRU", "LSTM", "RNN")


def _rnn_shape(m: Any, x: torch.Tensor) -> Any:
    """(output, h_n) of nn.GRU/RNN, or (output, (h_n, c_n)) of nn.LSTM, as meta tensors."""
    if x.dim() not in (2, 3) or x.shape[-1] != m.input_size:
        raise ValueError(f"expected input of 2 or 3 dims ending in input_size={m.input_size}")
    d = 2 if m.bidirectional else 1
    proj = getattr(m, "proj_size", 0) or m.hidden_size
    batched = x.dim() == 3
    if batched:
        b, t = (x.shape[0], x.shape[1]) if m.batch_first else (x.shape[1], x.shape[0])
        out = (b, t, d * proj) if m.batch_first else (t, b, d * proj)
        h = (d * m.num_layers, b, proj)
        c = (d * m.num_layers, b, m.hidden_size)
    else:
        out, h, c = (x.shape[0], d * proj), (d * m.num_layers, proj), (d * m.num_layers, m.hidden_size)
    meta = lambda shape: torch.empty(*shape, dtype=x.dtype, device="meta")  # noqa: E731
    if isinstance(m, torch.nn.LSTM):
        return meta(out), (meta(h), meta(c))
    return meta(out), meta(h)


def _expects(node: GNode, args: dict) -> str:
    op = node.op
    v = args.get(op.infer.arg) if op.infer else None
    for key, text in _FAMILY:
        if key in op.name:
            return text.format(op=op.name, v=v)
    if op.name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum"):
        return f"{op.name} expects shapes that broadcast: equal sizes, or 1, aligned from the right"
    return f"see `specc ops` for what {op.name} takes"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def memory_limit() -> int:
    """Bytes of parameters we accept: SPECC_MAX_PARAM_BYTES, else half of the physical memory."""
    env = os.environ.get("SPECC_MAX_PARAM_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} PB"


def guard_size(typed: TypedGraph) -> None:
    """Refuse a spec whose weights would not fit, before any of them is allocated."""
    limit = memory_limit()
    total = typed.bytes
    if total <= limit:
        return
    biggest = max(typed.graph.nodes, key=lambda n: typed.info.get(n.path, NodeInfo(())).bytes)
    raise SpecError.at(biggest.loc, f"the model's weights need {human_bytes(total)}, more than the "
                       f"{human_bytes(limit)} allowed ({typed.info[biggest.path].params:,} parameters in "
                       f"'{biggest.path}' alone)", "shrink the layers, or raise SPECC_MAX_PARAM_BYTES")
