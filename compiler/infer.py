"""One node's shape inference: fill in its input-size argument, build its module on `meta`, and run
its calling convention on the two samples (see `shapes`)."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from . import dimexpr
from .calls import Call
from .errors import first_line
from .graph import GNode
from .typed import DTYPES, NodeInfo, ShapeError, dim_source, fmt_shape, render_shape, run_call

if TYPE_CHECKING:
    from .shapes import _Pass

_RNNS = ("GRU", "LSTM", "RNN")


class _MetaEmitter:
    """The shape backend of `calls.Emitter`: sizes are ints of the sample, helpers really run."""

    def __init__(self, sample: dict[str, int], node: GNode, shape_of: Any, symbols: list[str]):
        self.sample, self.node, self.shape_of, self.symbols = sample, node, shape_of, symbols

    def size(self, x: torch.Tensor, dim: int) -> int:
        return int(x.shape[dim])

    def attr(self, x: torch.Tensor, name: str) -> Any:
        return getattr(x, name)

    def dim(self, symbol: str) -> int:
        node = self.node
        loc = _size_loc(node, symbol)
        if symbol not in self.sample:
            raise ShapeError(f"{node.op.name} '{node.path}' names dim '{symbol}', which no input declares",
                             f"symbolic dims: {', '.join(self.symbols) or 'none'}; or use -1", loc)
        if dim_source(node, symbol, self.shape_of) is None:
            raise ShapeError(f"{node.op.name} '{node.path}' names dim '{symbol}', which neither its input nor its "
                             "block's inputs carry", "use -1 for that dim, or pass a tensor that has it into the block",
                             loc)
        return self.sample[symbol]

    def arith(self, op: str, a: int, b: int) -> int:
        try:
            return dimexpr.compute(op, a, b)
        except dimexpr.DimExprError as e:
            raise ShapeError(f"{_desc(self.node)}: {e}", "check the size expression", _size_loc(self.node, "//")) from None

    def dtype(self, name: str) -> torch.dtype:
        return DTYPES[name]

    def device(self) -> torch.device:
        return torch.device("meta")  # sizes are samples: a tensor made from nothing must cost nothing

    def call(self, call: Call) -> Any:
        return run_call(call, None, None)


class NodeRunner:
    def __init__(self, run: "_Pass"):
        self.p = run

    def run(self, node: GNode) -> None:
        p = self.p
        xa = [p.get(p.env_a, v, node, i) for i, v in enumerate(node.inputs)]
        xb = [p.get(p.env_b, v, node, i) for i, v in enumerate(node.inputs)]
        if any(x is None for x, v in zip(xa, node.inputs) if v is not None):
            return  # an input failed; its error is already reported
        self.tensors_only(node, xa)
        key = _memo_key(node, xa, xb)
        if key is not None and key in p.memo:
            a, b, shape, counts, args, module = p.memo[key]
        else:
            args = self.infer_arg(node, xa, xb)
            module = self.make(node, args)
            a, b = self.both(node, args, module, xa, xb)
            shape = render_shape(a, b, p.sampler)
            if isinstance(a, torch.Tensor) and 0 in a.shape:
                raise ShapeError(f"{_desc(node)} gives an empty output {fmt_shape(shape)}",
                                 "every size must be at least 1; check the node's arguments", _zero_arg(node, args))
            counts = _counts(node, module)
            if key is not None:
                p.memo[key] = (a, b, shape, counts, args, module)
        counts = counts if node.trainable else (counts[0], 0, counts[2])  # frozen: `trainable: false`
        counts = self.ties(node, module, counts)
        given = self.inits(node, module)
        p.modules[node.path] = module
        p.env_a[node.path], p.env_b[node.path] = a, b
        p.info[node.path] = NodeInfo(shape, *counts, dict(args), given)

    def tensors_only(self, node: GNode, xs: list) -> None:
        for i, x in enumerate(xs):
            if x is not None and not isinstance(x, torch.Tensor):
                raise ShapeError(f"{_desc(node)} needs a tensor input, got a tuple", "pick an element with name.K",
                                 node.ref_locs[i] if i < len(node.ref_locs) else None)

    def infer_arg(self, node: GNode, xa: list, xb: list) -> dict[str, Any]:
        """Fill in the input-size argument, or check the one the spec gave."""
        args = dict(node.args)
        infer = node.op.infer
        if infer is None:
            return args
        if not xa or xa[0] is None:
            raise ShapeError(f"{_desc(node)} reads its {infer.arg} from its first input, which it was not given",
                             f"give it one: from: [x] (its inputs: {', '.join(node.op.slots)})")
        x, y, s = xa[0], xb[0], self.p.sampler
        dim = infer.dim
        if x.dim() < (dim + 1 if dim >= 0 else -dim):
            raise ShapeError(f"{_desc(node)} got input {self.shapes(xa, xb)}, which has too few dims",
                             f"{node.op.name} reads its {infer.arg} from input dim {dim}")
        size_a, size_b = int(x.shape[dim]), int(y.shape[dim])
        if size_a != size_b:
            raise ShapeError(f"{_desc(node)} cannot take {infer.arg} from symbolic dim '{s.render(size_a, size_b)}' of "
                             f"input {self.shapes(xa, xb)}", f"{infer.arg} must be a fixed size; make that dim a number")
        given = args.get(infer.arg)
        if given is None:
            args[infer.arg] = size_a
            return args
        expect = given if isinstance(given, int) else tuple(given)
        if isinstance(expect, tuple):
            n = len(expect)
            match = x.dim() >= n and tuple(int(d) for d in x.shape[-n:]) == expect == tuple(int(d) for d in y.shape[-n:])
        else:
            match = size_a == expect
        if not match:
            raise ShapeError(f"{_desc(node)} was given {infer.arg}={given} but its input is {self.shapes(xa, xb)}",
                             f"drop {infer.arg}: specc infers it, or fix the size")
        return args

    def make(self, node: GNode, args: dict) -> Any:
        """The node's module on meta, or its tensor; None for a function."""
        op = node.op
        if op.kind == "tensor":
            dtype = DTYPES[args.get("dtype", "float32")]
            try:
                t = torch.empty(*args["shape"], dtype=dtype, device="meta")
            except (RuntimeError, ValueError, OverflowError) as e:
                raise ShapeError(f"cannot create {_desc(node)}: {first_line(e)}", "use a smaller shape",
                                 node.arg_locs.get("shape")) from None
            return torch.nn.Parameter(t, requires_grad=args.get("requires_grad", True)) if op.name == "Parameter" else t
        if op.kind != "module":
            return None
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in op.ctor_args(args).items()}
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "initializing zero-element tensors": refused below
                module = _construct(op, kwargs)
        except Exception as e:  # torch validates its own arguments in many ways
            raise ShapeError(f"cannot create {_desc(node)}: {self.p.sampler.unsample(first_line(e))}",
                             "check the node's arguments") from None
        _refuse_empty(node, args, module)
        return module

    def call(self, node: GNode, args: dict, module: Any, xs: list, sample: dict[str, int]) -> Any:
        op = node.op
        if op.name in _RNNS and module is not None:  # meta RNNs loop over time: compute their shapes instead
            return _rnn_shape(module, xs[0])
        e = _MetaEmitter(sample, node, self.p.shape_of, list(self.p.sampler.a))
        return run_call(op.bind(e, xs, args, op), module, module)

    def both(self, node: GNode, args: dict, module: Any, xa: list, xb: list) -> tuple[Any, Any]:
        """Run A and run B; a failure is reported with its sizes rendered from the two runs' messages."""
        s = self.p.sampler
        try:
            a = self.call(node, args, module, xa, s.a)
        except ShapeError:
            raise
        except Exception as ea:
            try:
                self.call(node, args, module, xb, s.b)
                text_b = None
            except Exception as eb:  # noqa: BLE001 - the same failure, for its sizes
                text_b = first_line(eb)
            raise self.failure(node, args, xa, xb, s.unsample(first_line(ea), text_b)) from None
        try:
            b = self.call(node, args, module, xb, s.b)
        except ShapeError:
            raise
        except Exception as eb:  # only B fails: shapes.infer_shapes retries with other samples
            error = self.failure(node, args, xa, xb, s.unsample(first_line(eb), None, (s.b, s.a)))
            error.only_b = True
            raise error from None
        return a, b

    def failure(self, node: GNode, args: dict, xa: list, xb: list, message: str) -> ShapeError:
        return ShapeError(f"{_desc(node)} cannot take input {self.shapes(xa, xb)}: {message}", _expects(node, args))

    def shapes(self, xa: list, xb: list) -> str:
        return ", ".join(fmt_shape(render_shape(a, b, self.p.sampler)) if isinstance(a, torch.Tensor) else "(tuple)"
                         for a, b in zip(xa, xb) if a is not None)

    def inits(self, node: GNode, module: Any) -> dict[str, Any]:
        """A module's init: names its own parameters, each with an init its shape allows; one the
        module was built without (`bias: false`) is skipped."""
        from . import inits
        own = dict(module.named_parameters(recurse=False)) if isinstance(module, torch.nn.Module) else {}
        active = {}
        for param, (init, loc) in node.inits.items():
            if param not in own:
                if param in getattr(module, "_parameters", {}):  # registered as None: switched off
                    continue
                raise ShapeError(f"{_desc(node)} has no parameter '{param}' to initialize",
                                 f"its parameters: {', '.join(own) or 'none'}", loc)
            bad = inits.problem(init, "float32", shape=tuple(own[param].shape))
            if bad is not None:
                raise ShapeError(bad[0], bad[1], loc)
            active[param] = init
        return active

    def ties(self, node: GNode, module: Any, counts: tuple) -> tuple:
        """A tied parameter must have its target's shape; it is counted once, at the target."""
        params, trainable, nbytes = counts
        for tie in node.ties:
            own = getattr(module, tie.param, None) if module is not None else None
            target = self.p.modules.get(tie.node)
            other = getattr(target, tie.key.rsplit(".", 1)[1], None) if target is not None else None
            if not isinstance(own, torch.nn.Parameter):
                raise ShapeError(f"{_desc(node)} has no parameter '{tie.param}' to tie",
                                 f"its parameters: {', '.join(n for n, _ in module.named_parameters()) or 'none'}",
                                 tie.param_loc or tie.loc)
            if not isinstance(other, torch.nn.Parameter):
                what = "a buffer" if isinstance(other, torch.Tensor) else "not a tensor"
                params = ", ".join(f"{tie.node}.{n}" for n, _ in target.named_parameters()) if target is not None else ""
                raise ShapeError(f"'{tie.key}' is {what} of '{tie.node}', not a parameter",
                                 f"tie to one of its parameters: {params or 'it has none'}", tie.loc)
            if tuple(own.shape) != tuple(other.shape):
                raise ShapeError(f"{tie.param} of {_desc(node)} has shape {tuple(own.shape)} but '{tie.key}' has "
                                 f"{tuple(other.shape)}", "tied tensors must have the same shape", tie.loc)
            params -= own.numel()
            trainable -= own.numel() if own.requires_grad and node.trainable else 0  # it follows its owner
            nbytes -= own.numel() * own.element_size()
        return params, trainable, nbytes


def _construct(op: Any, kwargs: dict) -> Any:
    from .targets import resolve
    return resolve(op.target)(**kwargs)


def _counts(node: GNode, module: Any) -> tuple[int, int, int]:
    if module is None:
        return 0, 0, 0
    if isinstance(module, torch.Tensor):
        n = module.numel()
        learned = isinstance(module, torch.nn.Parameter)
        persistent = learned or node.args.get("persistent", True)
        return (n if learned else 0), (n if learned and module.requires_grad else 0), \
            (n * module.element_size() if persistent else 0)
    params = trainable = nbytes = 0
    for prm in module.parameters():
        params += prm.numel()
        trainable += prm.numel() if prm.requires_grad else 0
        nbytes += prm.numel() * prm.element_size()
    nbytes += sum(b.numel() * b.element_size() for b in module.buffers())
    return params, trainable, nbytes


def _sig(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), x.dtype)
    return tuple(_sig(y) for y in x) if isinstance(x, (tuple, list)) else type(x).__name__


def _memo_key(node: GNode, xa: list, xb: list) -> Any:
    if node.op.kind == "tensor" or node.ties or node.inits:
        return None  # each owns its own tensor, or says how its own are made
    try:
        args = repr(sorted(node.args.items()))
    except TypeError:
        return None
    return (node.op.name, node.op.target, args, _sig(xa), _sig(xb), tuple(v is None for v in node.inputs))


def _size_loc(node: GNode, text: str) -> Any:
    """Where a size argument holding `text` (a dim name, or an operator) is written, if one does."""
    for k in node.op.sizes:
        v = node.args.get(k)
        if any(isinstance(x, str) and text in x for x in (v if isinstance(v, list) else [v])):
            return node.arg_locs.get(k)
    return next((node.arg_locs[k] for k in node.op.sizes if k in node.arg_locs), None)


def _desc(node: GNode) -> str:
    return f"{node.op.name} '{node.path}'"


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
    ("expand", "expand grows size-1 dims only; -1 keeps a dim"),
    ("einsum", "einsum expects one subscript per dim of each input"),
]
_BROADCAST = ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "where", "masked_fill")


def _expects(node: GNode, args: dict) -> str:
    op = node.op
    v = args.get(op.infer.arg) if op.infer else None
    for key, text in _FAMILY:
        if key in op.name:
            return text.format(op=op.name, v=v)
    if op.name in _BROADCAST:
        return f"{op.name} expects shapes that broadcast: equal sizes, or 1, aligned from the right"
    return f"see `specc ops` for what {op.name} takes"


def _rnn_shape(m: Any, x: torch.Tensor) -> Any:
    """(output, h_n) of nn.GRU/RNN, or (output, (h_n, c_n)) of nn.LSTM, as meta tensors."""
    if x.dim() not in (2, 3) or x.shape[-1] != m.input_size:
        raise ValueError(f"expected input of 2 or 3 dims ending in input_size={m.input_size}")
    d = 2 if m.bidirectional else 1
    proj = getattr(m, "proj_size", 0) or m.hidden_size
    if x.dim() == 3:
        b, t = (x.shape[0], x.shape[1]) if m.batch_first else (x.shape[1], x.shape[0])
        out = (b, t, d * proj) if m.batch_first else (t, b, d * proj)
        h, c = (d * m.num_layers, b, proj), (d * m.num_layers, b, m.hidden_size)
    else:
        out, h, c = (x.shape[0], d * proj), (d * m.num_layers, proj), (d * m.num_layers, m.hidden_size)
    meta = lambda shape: torch.empty(*shape, dtype=x.dtype, device="meta")  # noqa: E731
    if isinstance(m, torch.nn.LSTM):
        return meta(out), (meta(h), meta(c))
    return meta(out), meta(h)


def _zero_arg(node: GNode, args: dict) -> Any:
    """Where the spec gave a size of 0, if it did."""
    def zero(v: Any) -> bool:
        return v == 0 and not isinstance(v, bool) or isinstance(v, (list, tuple)) and any(map(zero, v))
    return next((node.arg_locs[k] for k, v in args.items() if k in node.arg_locs and zero(v)), None)


def _refuse_empty(node: GNode, args: dict, module: Any) -> None:
    """A module with a zero-element parameter is a size argument of 0: refused, not built."""
    for name, param in module.named_parameters() if isinstance(module, torch.nn.Module) else ():
        if param.numel() == 0:
            raise ShapeError(f"{_desc(node)} would have an empty parameter '{name}' {tuple(param.shape)}",
                             "every size argument must be at least 1", _zero_arg(node, args))
