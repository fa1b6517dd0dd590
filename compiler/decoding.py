"""The run-time pieces the KV-cache pass (`kvcache`) puts into a decoder graph.

They are small on purpose: the pass decides *where* they go, these say *what* they compute.

- `KVSlot`: one attention node's static cache, preallocated up to the time dim's max.
- `decode_mask`: the boolean mask over cache + new tokens, causal and padding-aware.
- `RowWise`: the position subgraph (everything computed from `arange` over time alone, such as
  learned position embeddings or RoPE's cos/sin) run on every row's positions of `position_ids`.
- `align_rows`: a per-row position value broadcast against a batched one.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F


class KVSlot(nn.Module):
    """The static K/V cache of one attention node: `[batch, heads, max_len, head_dim]` each, allocated
    at the first step of a batch and reused after; not part of the state_dict."""

    def __init__(self, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("k", torch.empty(0), persistent=False)
        self.register_buffer("v", torch.empty(0), persistent=False)

    def forward(self, k: torch.Tensor, v: torch.Tensor, past_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: (B, H, T, D) for the T new tokens; returns the (B, H, past+T, D) views that attention reads
        end = past_length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} tokens; this step needs {end}")
        if self.k.shape[:2] != k.shape[:2] or self.k.shape[3:] != k.shape[3:] or self.k.dtype != k.dtype \
                or self.k.device != k.device or self.v.shape[1:2] != v.shape[1:2]:
            b, h, _, d = k.shape
            self.k = k.new_zeros(b, h, self.max_len, d)
            self.v = v.new_zeros(v.size(0), v.size(1), self.max_len, v.size(3))
        self.k.narrow(2, past_length, k.size(2)).copy_(k)  # in place: the cache never moves
        self.v.narrow(2, past_length, v.size(2)).copy_(v)
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)


def decode_mask(attention_mask: torch.Tensor | None, tokens: torch.Tensor, past_length: Any) -> torch.Tensor | None:
    """(B, past+T) 1/0 key mask and (B, T) new tokens -> (B, 1, T, past+T) bool, True where a query may
    attend: keys up to its own position that are not padding. A padding query sees itself, so that no
    row of the softmax is empty (an empty row would be NaN, and NaN times a zero weight is NaN).
    Without padding (`attention_mask` None), one new token attends to every key: no mask at all."""
    t = tokens.size(1)
    if attention_mask is None and t == 1:
        return None
    s = attention_mask.size(1) if attention_mask is not None else past_length + t
    query = torch.arange(t, device=tokens.device) + (s - t)  # (T,) each new token's index among the keys
    key = torch.arange(s, device=tokens.device)  # (S,)
    causal = key.unsqueeze(0) <= query.unsqueeze(1)  # (T, S)
    if attention_mask is None:
        return causal
    itself = key.unsqueeze(0) == query.unsqueeze(1)
    keep = attention_mask.to(torch.bool)[:, None, None, :] & causal  # (B, 1, T, S)
    return keep | itself


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Left-padded rows' positions: 0 at each row's first real token (padding gets 0 too). (B, S) -> (B, S)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class RowWise(nn.Module):
    """The position subgraph on `position_ids` (B, T). A spec computes it for positions (T,), and every
    positional encoding is a function of each position alone (an embedding row, RoPE's angles), so all
    rows run as one flat list of B*T positions and come back as (B, T, ...). Rows that share their
    positions are given as (1, T)."""

    def __init__(self, fn: fx.GraphModule) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows, t = position_ids.shape
        return tuple(o.reshape((rows, t) + o.shape[1:]) for o in self.fn(position_ids.reshape(-1)))


def align_rows(rows: torch.Tensor, like: torch.Tensor | int) -> torch.Tensor:
    """A per-row value (B, *S) that the spec broadcast as (*S) against a batched value (B, ..., *S) of
    rank `like` (a tensor, or its rank): insert size-1 dims after the batch dim so that it lines up the
    same way."""
    missing = (like if isinstance(like, int) else like.dim()) - rows.dim()
    if missing <= 0:
        return rows
    return rows.reshape(rows.shape[:1] + (1,) * missing + rows.shape[1:])


class Decoder:
    """Incremental decoding with a static-cache decoder graph (`kvcache.decoder` builds one):

        dec = kvcache.decoder(compiled)
        logits = dec.start([[81, 218, 150], [7]])   # (B, vocab): each prompt's next-token logits
        logits = dec.step(torch.tensor([5, 9]))       # one new token per row, at each row's own position

    Prompts of different lengths are left-padded into one batch; padding is masked out and each row's
    positions start at its first real token, so a row computes what it would alone. One generation at
    a time: the caches live in the graph's modules.
    """

    def __init__(self, step: fx.GraphModule, max_len: int, vocab: int | None) -> None:
        self.graph, self.max_len, self.vocab = step, max_len, vocab
        self.length = 0  # tokens in the cache, padding included
        self.mask = torch.empty(0)
        self.positions = torch.empty(0)
        self.shared = True  # every row has the same positions: run the position nodes once

    @torch.inference_mode()  # lighter than no_grad: no version counters or view tracking on the way
    def start(self, rows: list[list[int]]) -> torch.Tensor:
        """Fill the cache with the prompts (one forward); the logits for each row's next token (B, V)."""
        width = max(len(r) for r in rows)
        if width > self.max_len:
            raise ValueError(f"a prompt of {width} tokens is longer than the cache ({self.max_len})")
        device = self._device()
        idx = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        self.mask = torch.zeros(len(rows), self.max_len, dtype=torch.long, device=device)
        for b, r in enumerate(rows):
            idx[b, width - len(r):] = torch.tensor(r, dtype=torch.long)
            self.mask[b, width - len(r):width] = 1
        self.shared = all(len(r) == width for r in rows)
        positions = positions_from_mask(self.mask[:, :width])
        self.length = 0
        logits = self._run(idx, positions)
        self.positions = positions[:, -1:]  # (B, 1) the last position of each row
        return logits

    @torch.inference_mode()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Append one token per row (B,); the logits for the token after it (B, V)."""
        if self.length >= self.max_len:
            raise ValueError(f"the cache is full ({self.max_len} tokens)")
        if not self.shared:
            self.mask[:, self.length] = 1
        self.positions = self.positions + 1
        return self._run(ids.view(-1, 1).to(self.mask.device), self.positions)

    def _run(self, idx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        end = self.length + idx.size(1)
        mask = None if self.shared else self.mask[:, :end]  # no padding: no mask to build
        out = self.graph(idx, mask, positions[:1] if self.shared else positions, self.length)
        self.length = end
        logits = out[0] if isinstance(out, tuple) else out
        return logits[:, -1, :]

    def _device(self) -> torch.device:
        return next(iter(self.graph.parameters()), torch.empty(0)).device


_ACTIVATIONS = {nn.SiLU: F.silu, nn.ReLU: F.relu, nn.Tanh: torch.tanh, nn.Sigmoid: torch.sigmoid}


def _leaf_call(m: nn.Module) -> tuple[Any, tuple, tuple[str, ...], dict[str, Any]] | None:
    """A standard leaf module as a function: (function, constant args after the input, the module's
    tensors that follow them, constant kwargs); None for any other module."""
    kind = type(m)
    if kind is nn.Linear:
        return F.linear, (), ("weight", "bias"), {}
    if kind is nn.Embedding and m.max_norm is None:
        return F.embedding, (), ("weight",), {"padding_idx": m.padding_idx}
    if kind is nn.RMSNorm:
        return F.rms_norm, (m.normalized_shape,), ("weight",), {"eps": m.eps}
    if kind is nn.LayerNorm:
        return F.layer_norm, (m.normalized_shape,), ("weight", "bias"), {"eps": m.eps}
    if kind is nn.GELU:
        return F.gelu, (), (), {"approximate": m.approximate}
    if kind in _ACTIVATIONS:
        return _ACTIVATIONS[kind], (), (), {}
    return None


def inline_leaves(gm: fx.GraphModule) -> fx.GraphModule:
    """For inference speed: standard leaf modules (Linear, norms, embeddings, activations) called as
    functions on their tensors, which the decoder holds as plain attributes too (one dict lookup each,
    not a walk down `self.model.layers[0].self_attn...` and a Module.__call__). The tensors are the same
    objects, so the weights stay shared; the modules stay registered, so `parameters()` still lists them."""
    for node in list(gm.graph.nodes):
        leaf = _leaf_call(gm.get_submodule(node.target)) if node.op == "call_module" else None
        if leaf is None:
            continue
        fn, constants, names, kwargs = leaf
        module = gm.get_submodule(node.target)
        with gm.graph.inserting_before(node):
            tensors = [_fast_attr(gm, node.target, name, getattr(module, name)) for name in names]
            call = gm.graph.call_function(fn, (node.args[0], *constants, *tensors), kwargs)
        call.meta.update(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


def _fast_attr(gm: fx.GraphModule, target: str, name: str, tensor: torch.Tensor | None) -> fx.Node | None:
    if tensor is None:
        return None  # a Linear without bias
    flat = f"_fast_{target.replace('.', '_')}_{name}"
    gm.__dict__[flat] = tensor  # a plain attribute: not registered twice, found before Module.__getattr__
    return gm.graph.get_attr(flat)
