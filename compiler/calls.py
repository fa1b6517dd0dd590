"""How a node's inputs and arguments become a call: one convention per op, written once.

Shape inference, lowering and eject all call `bind` with an `Emitter` of their own: on meta
tensors it computes, on fx nodes it emits graph nodes, on Python source it writes expressions.
So "how to call reshape" exists in one place, and the three cannot disagree.

Torch-free: targets are qualified names (`torch.add`) that each backend resolves itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TypeVar

from . import dimexpr

V = TypeVar("V")


@dataclass(frozen=True)
class Call:
    """kind: `module` (the node's own submodule), `function` (a qualified name), `method` (on
    args[0]), `getitem` (args[0][args[1]]) or `tensor` (the node's own parameter or buffer)."""

    kind: str
    target: str = ""
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class Emitter(Protocol[V]):
    """What a convention may ask of a backend besides the final call."""

    def size(self, x: V, dim: int) -> V: ...          # x.size(dim)
    def attr(self, x: V, name: str) -> V: ...         # x.device, x.dtype
    def dim(self, symbol: str) -> V: ...              # the run-time size of a symbolic dim
    def arith(self, op: str, a: Any, b: Any) -> V: ...  # a + b, a - b, a * b, a // b of sizes
    def dtype(self, name: str) -> V: ...              # torch.float32 for 'float32'
    def device(self) -> V: ...                        # where a tensor made from nothing goes (None: default)
    def call(self, call: Call) -> V: ...              # a helper value (a causal mask, say)


Convention = Callable[[Emitter, list, dict, Any], Call]  # (emitter, inputs by slot, args, op)


def plain(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`target(*inputs, **args)`; absent optional inputs are left out from the end."""
    return Call(op.kind, op.target, tuple(_trim(xs)), dict(args))


def binary(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`torch.add(a, b)`, `torch.add(a, other)`, or `torch.pow(input, a)` with a number on the left."""
    kwargs = dict(args)
    if kwargs.get("other") is not None:
        return Call("function", op.target, (xs[0], kwargs.pop("other")), kwargs)
    kwargs.pop("other", None)
    if kwargs.get("input") is not None:
        return Call("function", op.target, (kwargs.pop("input"), xs[0]), kwargs)
    kwargs.pop("input", None)
    return Call("function", op.target, (xs[0], xs[1]), kwargs)


def run_size(e: Emitter, value: Any) -> Any:
    """A size argument at run time: an int as it is, a dim or an expression of dims (`time - 1`)
    through the backend."""
    if not isinstance(value, str):
        return value
    return dimexpr.evaluate(dimexpr.parse(value), e.dim, e.arith)


def sequence(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`torch.cat([a, b, ...], dim=...)`."""
    return Call("function", op.target, (list(_trim(xs)),), dict(args))


def sized(key: str, method: bool = False) -> Convention:
    """reshape (`torch.reshape(x, shape=[...])`) and expand (`x.expand([...])`): symbolic names in
    the size list become run-time sizes."""
    def bind(e: Emitter, xs: list, args: dict, op: Any) -> Call:
        sizes = [run_size(e, d) for d in args[key]]
        if method:
            return Call("method", op.target, (xs[0], sizes), {})
        return Call("function", op.target, (xs[0],), {key: sizes})
    return bind


def positional(*names: str) -> Convention:
    """`target(input, a, b, **rest)`: the named arguments go positionally, after the inputs."""
    def bind(e: Emitter, xs: list, args: dict, op: Any) -> Call:
        rest = {k: v for k, v in args.items() if k not in names}
        return Call("function", op.target, (*_trim(xs), *(args[n] for n in names)), rest)
    return bind


def where(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`torch.where(condition, input, other)`, other a ref or a number."""
    other = args["other"] if args.get("other") is not None else xs[2]
    return Call("function", op.target, (xs[0], xs[1], other), {})


def einsum(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    return Call("function", op.target, (args["equation"], *_trim(xs)), {})


def _made(e: Emitter, args: dict) -> dict:
    """`dtype=` and `device=` for a tensor a node makes: its dtype if given, on the backend's device."""
    kwargs = {"dtype": e.dtype(args["dtype"])} if args.get("dtype") else {}
    device = e.device()
    return kwargs if device is None else dict(kwargs, device=device)


def arange(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """Positions 0 .. n-1 along `dim` of the input (int64, on the input's device), or a plain range
    `start, end, step` whose bounds may be dims and expressions of them."""
    if xs and xs[0] is not None:
        kwargs = {"dtype": e.dtype(args["dtype"])} if args.get("dtype") else {}
        return Call("function", "torch.arange", (e.size(xs[0], args["dim"]),),
                    dict(kwargs, device=e.attr(xs[0], "device")))
    bounds = (run_size(e, args.get("start", 0)), run_size(e, args["end"]), run_size(e, args.get("step", 1)))
    return Call("function", "torch.arange", bounds, _made(e, args))


def full(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`torch.full(shape, fill_value)`; the shape may name dims and expressions of them."""
    return Call("function", "torch.full", ([run_size(e, d) for d in args["shape"]], args["fill_value"]), _made(e, args))


def like(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`torch.zeros_like(x)`, with a dtype when one is given."""
    return Call("function", op.target, (xs[0],), {"dtype": e.dtype(args["dtype"])} if args.get("dtype") else {})


def cast(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`x.to(torch.float32)`."""
    return Call("method", "to", (xs[0], e.dtype(args["dtype"])), {})


def narrow(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`torch.narrow(x, dim, start, length)`; start and length may be dims and expressions of them."""
    return Call("function", op.target, (xs[0], args["dim"], run_size(e, args["start"]), run_size(e, args["length"])), {})


def _along(dim: int, index: Any) -> tuple:
    """The subscript that puts `index` at `dim`: `(:, :, index)` or `(..., index, :)`."""
    return (slice(None),) * dim + (index,) if dim >= 0 else (Ellipsis, index) + (slice(None),) * (-dim - 1)


def slicing(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`x[:, start:end:step]` along `dim`; bounds may be dims and expressions of them."""
    bounds = (run_size(e, args.get(k)) if args.get(k) is not None else None for k in ("start", "end", "step"))
    return Call("getitem", "", (xs[0], _along(args["dim"], slice(*bounds))), {})


def index_select(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`x[:, index]`: the entries of x at `index` along `dim` (a table's rows by position ids);
    index may have any shape, and its dims take the place of `dim`."""
    return Call("getitem", "", (xs[0], _along(args.get("dim", 0), xs[1])), {})


def meshgrid(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`torch.meshgrid([a, b], indexing='ij')`: the indexing always said, as torch asks."""
    return Call("function", op.target, (list(_trim(xs)),), {"indexing": args.get("indexing", "ij")})


def tensor(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """A learnable parameter or a buffer the node owns: read it."""
    return Call("tensor")


def _causal_mask(e: Emitter, x: Any, axis: int) -> Any:
    """The boolean causal mask for x's sequence length: True above the diagonal (may not attend),
    as `nn.Transformer.generate_square_subsequent_mask` marks with -inf."""
    n = e.size(x, axis)
    ones = e.call(Call("function", "torch.ones", (n, n), {"device": e.attr(x, "device")}))
    return e.call(Call("function", "torch.ne", (e.call(Call("function", "torch.triu", (ones, 1))), 0)))


def _with_masks(e: Emitter, x: Any, masks: dict[str, Any], args: dict, op: Any) -> dict:
    """The call-time arguments with the masks given; `is_causal` without an attention mask (the first
    of `masks`) makes one, since torch asks for a mask with the hint."""
    kwargs = {k: v for k, v in args.items() if k in op.call_args}
    first = next(iter(masks))
    if kwargs.get("is_causal") and masks[first] is None:
        masks = dict(masks, **{first: _causal_mask(e, x, 1 if args.get("batch_first") else 0)})
    kwargs.update({k: v for k, v in masks.items() if v is not None})
    return kwargs


def attention(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """MultiheadAttention(query, key, value, key_padding_mask, attn_mask): self-attention when only
    the query is given."""
    query, key, value, padding, mask = (xs + [None] * 5)[:5]
    key = query if key is None else key
    value = key if value is None else value
    kwargs = _with_masks(e, query, {"attn_mask": mask, "key_padding_mask": padding}, args, op)
    return Call("module", "", (query, key, value), kwargs)


def encoder_layer(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """TransformerEncoderLayer(src, src_mask, src_key_padding_mask, is_causal)."""
    src, mask, padding = (xs + [None] * 3)[:3]
    return Call("module", "", (src,), _with_masks(e, src, {"src_mask": mask, "src_key_padding_mask": padding}, args, op))


def module(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """The node's submodule on its inputs, with the op's call-time arguments."""
    kwargs = {k: v for k, v in args.items() if k in op.call_args}
    return Call("module", "", tuple(_trim(xs)), kwargs)


def _trim(xs: list) -> list:
    xs = list(xs)
    while xs and xs[-1] is None:
        xs.pop()
    return xs
