"""How a node's inputs and arguments become a call: one convention per op, written once.

Shape inference, lowering and eject all call `bind` with an `Emitter` of their own: on meta
tensors it computes, on fx nodes it emits graph nodes, on Python source it writes expressions.
So "how to call reshape" exists in one place, and the three cannot disagree.

Torch-free: targets are qualified names (`torch.add`) that each backend resolves itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TypeVar

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
    def call(self, call: Call) -> V: ...              # a helper value (a causal mask, say)


Convention = Callable[[Emitter, list, dict, Any], Call]  # (emitter, inputs by slot, args, op)


def plain(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`target(*inputs, **args)`; absent optional inputs are left out from the end."""
    return Call(op.kind, op.target, tuple(_trim(xs)), dict(args))


def binary(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`torch.add(a, b)` or `torch.add(a, other)`."""
    kwargs = dict(args)
    if "other" in kwargs:
        return Call("function", op.target, (xs[0], kwargs.pop("other")), kwargs)
    return Call("function", op.target, (xs[0], xs[1]), kwargs)


def sequence(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`torch.cat([a, b, ...], dim=...)`."""
    return Call("function", op.target, (list(_trim(xs)),), dict(args))


def sized(key: str, method: bool = False) -> Convention:
    """reshape (`torch.reshape(x, shape=[...])`) and expand (`x.expand([...])`): symbolic names in
    the size list become run-time sizes."""
    def bind(e: Emitter, xs: list, args: dict, op: Any) -> Call:
        sizes = [e.dim(d) if isinstance(d, str) else d for d in args[key]]
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


def arange(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """Positions 0 .. n-1 along `dim` of the input, as int64 on the input's device."""
    return Call("function", "torch.arange", (e.size(xs[0], args["dim"]),), {"device": e.attr(xs[0], "device")})


def slicing(e: Emitter, xs: list, args: dict, op: Any) -> Call:
    """`x[:, start:end:step]` along `dim`."""
    dim = args["dim"]
    index = (slice(None),) * dim + (slice(args.get("start"), args.get("end"), args.get("step")),) if dim >= 0 else \
        (Ellipsis, slice(args.get("start"), args.get("end"), args.get("step"))) + (slice(None),) * (-dim - 1)
    return Call("getitem", "", (xs[0], index), {})


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
