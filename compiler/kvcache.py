"""The KV-cache pass: a causal LM's fx graph -> an incremental decoder that shares its weights.

Like torch.fx's passes (`split_module`, `shape_prop`), this is a transform of the one graph, not a
second model written per architecture. It works for any spec whose token input is `[batch, time]`
and whose attention is `scaled_dot_product_attention` with `is_causal`:

- each causal attention node reads its keys and values through a cache: a static `KVSlot`
  preallocated up to the time dim's max (`style="static"`, for generation), or the past tensors
  given as inputs and concatenated, returned as `present` (`style="concat"`, for ONNX with past);
- `is_causal` becomes one explicit mask over cache + new tokens (`decode_mask`), built once from
  `attention_mask`, so left-padded prompts of different lengths run as one batch;
- every `arange` over the time dim becomes `position_ids` (B, T), offset by the cache length; the
  nodes computed from positions alone (learned position embeddings, RoPE tables) run on every row's
  positions (`RowWise`), and line up with the batched values they meet (`align_rows`).

The decoder is for inference (dropout is left out). The result is checked against the full model
before it is used (`verify`): a spec that mixes
tokens outside its attention (a convolution over time, say) is refused, never decoded wrongly.

    step = derive(compiled)             # forward(idx, attention_mask, position_ids, past_length)
    print(step.code)                    # reads like the spec, with kv_cache.N calls at each attention
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from .decoding import Decoder, KVSlot, RowWise, align_rows, decode_mask, inline_leaves
from .errors import Loc, SpecError

_SDPA = (F.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention)
_SCALARS = {"size", "dim"}  # call_method results that are ints, not tensors


class NotCausalLM(SpecError):
    """The model is not a causal language model at all (no token input, or no causal attention)."""


@dataclass
class Plan:
    """What the pass found: the token input, its time dim and bound, the attention and position nodes."""

    token_input: str
    time: str
    max_len: int
    attentions: list[fx.Node] = field(default_factory=list)  # causal SDPA nodes, in graph order
    aranges: list[fx.Node] = field(default_factory=list)  # arange over the time dim
    vocab: int | None = None
    kv_shapes: list[tuple[int, int]] = field(default_factory=list)  # (kv_heads, head_dim) per attention
    heads: list[int] = field(default_factory=list)  # query heads per attention


def plan(compiled: Any) -> Plan:
    """Find what the pass rewrites, or raise one `SpecError` saying why this model cannot be decoded
    incrementally."""
    spec, gm, typed = compiled.spec, compiled.module, compiled.typed
    where = next(iter(spec.inputs.values())).loc if spec.inputs else Loc(spec.name, 0, 0)
    tokens = [i for i in spec.inputs.values() if i.dtype.startswith("int") and len(i.shape) == 2]
    if len(spec.inputs) != 1 or not tokens or not isinstance(tokens[0].shape[1], str):
        raise NotCausalLM.at(where, "a KV cache needs a causal language model: one int64 input [batch, time]",
                           "declare the tokens as idx: {shape: [batch, time], dtype: int64}")
    inp = tokens[0]
    time = inp.shape[1]
    bound = spec.dims.get(time)
    if bound is None or bound.max is None:
        raise SpecError.at(where, f"the KV cache is preallocated up to the time dim's max; '{time}' has none",
                           f"declare it: dims: {{{time}: {{max: 1024}}}}")
    found = Plan(inp.name, time, int(bound.max), vocab=int(inp.range[1]) if inp.range else None)
    for node in gm.graph.nodes:
        if _is_sdpa(gm, node):
            _check_causal(gm, node)
            found.attentions.append(node)
        elif node.op == "call_function" and node.target is torch.arange and _over_time(typed, node, time):
            found.aranges.append(node)
    if not found.attentions:
        raise NotCausalLM.at(where, "a KV cache needs causal attention: no scaled_dot_product_attention with "
                           "is_causal: true in this model", "write attention as scaled_dot_product_attention "
                           "with is_causal: true")
    found.kv_shapes = [_kv_shape(typed, n, 1) for n in found.attentions]
    found.heads = [_kv_shape(typed, n, 0)[0] for n in found.attentions]
    return found


def _is_sdpa(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _SDPA
    if node.op == "call_module":
        from .modules import ScaledDotProductAttention
        return isinstance(gm.get_submodule(node.target), ScaledDotProductAttention)
    return False


def _check_causal(gm: fx.GraphModule, node: fx.Node) -> None:
    causal = node.kwargs.get("is_causal") if node.op == "call_function" else gm.get_submodule(node.target).is_causal
    masked = len(node.args) > 3 or node.kwargs.get("attn_mask") is not None
    if not causal or masked:
        loc = node.meta.get("specc_loc")
        raise SpecError.at(loc, f"attention '{node.meta.get('specc_path', node.name)}' is not causal "
                           "(is_causal: true without a mask); a KV cache cannot decode it token by token",
                           "set is_causal: true, and leave the mask to the decoder")


def _over_time(typed: Any, node: fx.Node, time: str) -> bool:
    """`arange` along the time dim of a tensor, or the range 0 .. time - 1: the positions."""
    path = node.meta.get("specc_path")
    if path is None:
        return False
    g = typed.graph.node(path)
    if g.given:
        return typed.shape_of(g.given[0])[g.args["dim"]] == time
    return g.args.get("end") == time and g.args.get("start", 0) == 0 and g.args.get("step", 1) == 1


def _kv_shape(typed: Any, node: fx.Node, slot: int) -> tuple[int, int]:
    g = typed.graph.node(node.meta["specc_path"])
    shape = typed.shape_of(g.inputs[slot])  # queries or keys: (batch, heads, time, head_dim)
    return int(shape[1]), int(shape[-1])


def _kinds(gm: fx.GraphModule, found: Plan) -> dict[fx.Node, str]:
    """Each node's kind: `data` (reads the tokens), `position` (reads positions only) or `const`."""
    kinds: dict[fx.Node, str] = {}
    aranges = set(found.aranges)
    for node in gm.graph.nodes:
        ins = {kinds[i] for i in node.all_input_nodes if i in kinds}
        if node.op == "placeholder":
            kinds[node] = "data"
        elif node in aranges:
            kinds[node] = "position"
        elif node.op != "output":
            kinds[node] = "data" if "data" in ins else "position" if "position" in ins else "const"
    return kinds


def derive(compiled: Any, style: str = "static", found: Plan | None = None) -> fx.GraphModule:
    """The decoder graph, sharing `compiled.module`'s weights.

    static: `forward(idx, attention_mask, position_ids, past_length) -> logits` (the caches live in
    the module); concat: `forward(idx, attention_mask, position_ids, past_key_0, past_value_0, ...)
    -> (logits, present_key_0, present_value_0, ...)`, Optimum's order. attention_mask (B, past+T) may
    be None when no row is padded.
    """
    assert style in ("static", "concat")
    found = found or plan(compiled)
    return _Rewrite(compiled.module, compiled.typed, found, style).run()


def decoder(compiled: Any) -> Decoder:
    """The incremental decoder of a compiled causal LM, verified against the full model.

    >>> dec = decoder(specc.api.compiled_run("runs/gpt"))
    >>> logits = dec.start([[81, 218, 150]])
    """
    found = plan(compiled)
    dec = Decoder(inline_leaves(derive(compiled, "static", found)), found.max_len, found.vocab)
    verify(compiled, dec, found)
    return dec


@torch.no_grad()
def verify(compiled: Any, dec: Decoder, found: Plan) -> None:
    """Check the pass like black's `assert_equivalent`: two prompts of different lengths in one batch,
    then two steps, against the full model on each prompt alone. A model that mixes tokens outside its
    attention fails here, with its first attention's location."""
    model = compiled.module
    training = model.training
    model.train(False)  # inference mode
    if found.max_len < 3:
        return  # too short to check two steps after a prompt
    try:
        n = min(8, found.max_len)
        g = torch.Generator().manual_seed(0)
        rows = [torch.randint(0, found.vocab or 2, (n,), generator=g).tolist() for _ in range(2)]
        rows[1] = rows[1][: max(1, n - 3)]
        worst = max(_worst(model, dec, batch) for batch in (rows, rows[:1]))  # padded, then one row
    finally:
        model.train(training)
    if worst > 1:
        node = found.attentions[0]
        raise SpecError.at(node.meta.get("specc_loc"), "the KV-cache decoder derived from this model does not "
                           "compute what the full model computes: tokens meet outside causal attention",
                           "only scaled_dot_product_attention with is_causal may mix the tokens of a sequence")


def _worst(model: Any, dec: Decoder, rows: list[list[int]]) -> float:
    """The largest error of the decoder's last three logits per row against the full model on that row
    alone, in units of its tolerance (1e-3 relative + 1e-4 absolute)."""
    device = dec._device()
    got = [dec.start([r[:-2] for r in rows])] + [dec.step(torch.tensor([r[k] for r in rows])) for k in (-2, -1)]
    worst = 0.0
    for b, r in enumerate(rows):
        full = model(torch.tensor([r], device=device))
        full = (full[0] if isinstance(full, tuple) else full)[0, -3:]  # (3, V) the last three positions
        err = (torch.stack([x[b] for x in got]) - full).abs() / (1e-3 * full.abs() + 1e-4)
        worst = max(worst, float(err.max()))
    return worst


class _Rewrite:
    def __init__(self, gm: fx.GraphModule, typed: Any, found: Plan, style: str):
        self.gm, self.typed, self.found, self.style = gm, typed, found, style
        self.g = fx.Graph()
        self.env: dict[fx.Node, Any] = {}
        self.kinds = _kinds(gm, found)
        self.rows: dict[fx.Node, fx.Node] = {}  # position node -> its per-row value in the new graph
        self.aligned: dict[tuple[fx.Node, Any], fx.Node] = {}
        self.presents: list[fx.Node] = []
        self.modules: dict[str, torch.nn.Module] = {}

    def run(self) -> fx.GraphModule:
        g, found = self.g, self.found
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = g.placeholder(node.name)
        attention_mask = g.placeholder("attention_mask")
        self.positions = g.placeholder("position_ids")
        if self.style == "static":
            self.past = g.placeholder("past_length")
        else:
            self.pasts = [(g.placeholder(f"past_key_{i}"), g.placeholder(f"past_value_{i}"))
                          for i in range(len(found.attentions))]
        tokens = self.env[next(n for n in self.gm.graph.nodes if n.name == found.token_input)]
        past = self.past if self.style == "static" else g.call_method("size", (self.pasts[0][0], 2))
        self.mask = g.call_function(decode_mask, (attention_mask, tokens, past))
        self._position_subgraph()
        for node in self.gm.graph.nodes:
            if node.op == "output":
                self._output(node)
            elif self.kinds.get(node) in ("data", "const") and node.op != "placeholder":
                self._copy(node)
        root = torch.nn.Module()
        for name, sub in self.gm.named_children():
            root.add_module(name, sub)  # the same modules: the decoder shares the weights
        for name, t in list(self.gm.named_buffers(recurse=False)) + list(self.gm.named_parameters(recurse=False)):
            setattr(root, name, t)
        for name, m in self.modules.items():
            _set_module(root, name, m)
        out = _pruned(fx.GraphModule(root, g, class_name=type(self.gm).__name__ + "Decoder"))
        out.specc_kv_plan = found
        return out

    def _copy(self, node: fx.Node) -> None:
        if node in self.found.attentions:
            self.env[node] = self._attention(node)
            return
        if node.op == "call_module" and isinstance(self.gm.get_submodule(node.target), torch.nn.Dropout):
            self.env[node] = self._value(node.args[0], None)  # the decoder is for inference: dropout is identity
            return
        ref = next((i for i in node.all_input_nodes if self.kinds.get(i) == "data" and _is_tensor(i)), None)
        self.env[node] = self.g.node_copy(node, lambda n: self._value(n, ref))

    def _value(self, n: fx.Node, ref: fx.Node | None) -> fx.Node:
        if self.kinds.get(n) != "position":
            return self.env[n]
        if n not in self.rows:
            raise _cannot(n, "a position value that is not a tensor crosses into the token path")
        if ref is None:
            return self.rows[n]
        rank = self._rank(ref)  # one alignment per rank, shared by every layer that needs it
        key = (n, rank if rank is not None else self.env[ref])
        if key not in self.aligned:
            self.aligned[key] = self.g.call_function(align_rows, (self.rows[n], rank if rank is not None else
                                                                   self.env[ref]))
        return self.aligned[key]

    def _rank(self, ref: fx.Node) -> int | None:
        shape = self.typed.info.get(ref.meta.get("specc_path", ""), None)
        shape = shape.shape if shape is not None else None
        return len(shape) if isinstance(shape, tuple) and all(not isinstance(d, tuple) for d in shape) else None

    def _attention(self, node: fx.Node) -> fx.Node:
        """SDPA(q, k, v, is_causal) -> SDPA(q, cache(k), cache(v), attn_mask=decode_mask)."""
        g, i = self.g, self.found.attentions.index(node)
        q, k, v = (self.env[a] for a in node.args[:3])
        if self.style == "static":
            name = f"kv_cache.{i}"
            self.modules[name] = KVSlot(self.found.max_len)
            both = g.call_module(name, (k, v, self.past))
            k, v = g.call_function(operator.getitem, (both, 0)), g.call_function(operator.getitem, (both, 1))
        else:
            past_k, past_v = self.pasts[i]
            k = g.call_function(torch.cat, ([past_k, k],), {"dim": 2})
            v = g.call_function(torch.cat, ([past_v, v],), {"dim": 2})
            self.presents += [k, v]
        kwargs = {"attn_mask": self.mask}
        if node.op == "call_function":
            kwargs.update({key: val for key, val in node.kwargs.items() if key in ("scale", "enable_gqa")})
        else:
            kwargs["scale"] = self.gm.get_submodule(node.target).scale
        out = g.call_function(F.scaled_dot_product_attention, (q, k, v), kwargs)
        out.meta.update(node.meta)
        return out

    def _position_subgraph(self) -> None:
        """Move every position-only node into one `RowWise` module called on position_ids."""
        members = [n for n in self.gm.graph.nodes if self.kinds.get(n) == "position"]
        if not members:
            return
        sub, env = fx.Graph(), {}
        pos = sub.placeholder("position_ids")
        feeding = _feeding(members)
        for node in self.gm.graph.nodes:
            if node in self.found.aranges:  # the positions, in the dtype the spec asked of its arange
                dtype = node.kwargs.get("dtype")
                env[node] = pos if dtype is None else sub.call_method("to", (pos, dtype))
            elif self.kinds.get(node) == "position" or (self.kinds.get(node) == "const" and node in feeding):
                env[node] = sub.node_copy(node, lambda n: _sub_value(n, env))
        crossing = [n for n in members if any(self.kinds.get(u) == "data" for u in n.users) or
                    any(u.op == "output" for u in n.users)]
        for n in crossing:
            if not _is_tensor(n):
                raise _cannot(n, "a position value that is not a tensor crosses into the token path")
            shape = self.typed.info[n.meta["specc_path"]].shape if n.meta.get("specc_path") in self.typed.info else None
            if isinstance(shape, tuple) and (not shape or shape[0] != self.found.time):
                raise _cannot(n, f"a value computed from positions must have one row per position (time, ...), "
                              f"not {shape}")
        sub.output(tuple(env[n] for n in crossing))
        fn = _pruned(fx.GraphModule(self.gm, sub, class_name="Positions"))
        self.modules["positions"] = RowWise(fn)
        rows = self.g.call_module("positions", (self.positions,))
        for i, n in enumerate(crossing):
            self.rows[n] = self.g.call_function(operator.getitem, (rows, i))

    def _output(self, node: fx.Node) -> None:
        result = fx.map_arg(node.args[0], lambda n: self._value(n, None))
        if self.style == "concat":
            first = result[0] if isinstance(result, (tuple, list)) else result
            result = (first, *self.presents)
        self.g.output(result)


def _pruned(gm: fx.GraphModule) -> fx.GraphModule:
    """Drop what the rewrite left unused (the sizes an arange read, say), then lint, as fx passes do."""
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm


def _feeding(members: list[fx.Node]) -> set[fx.Node]:
    """The const nodes the position nodes read, transitively."""
    seen: set[fx.Node] = set()
    todo = [i for m in members for i in m.all_input_nodes]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += n.all_input_nodes
    return seen


def _sub_value(n: fx.Node, env: dict) -> fx.Node:
    if n not in env:
        raise _cannot(n, "positions are computed from the tokens' values here")
    return env[n]


def _is_tensor(n: fx.Node) -> bool:
    return not ((n.op == "call_method" and n.target in _SCALARS) or (n.op == "call_function" and n.target is getattr))


def _set_module(root: torch.nn.Module, dotted: str, module: torch.nn.Module) -> None:
    *parents, leaf = dotted.split(".")
    owner = root
    for p in parents:
        if not hasattr(owner, p):
            owner.add_module(p, torch.nn.Module())
        owner = getattr(owner, p)
    owner.add_module(leaf, module)


def _cannot(n: fx.Node, why: str) -> SpecError:
    return SpecError.at(n.meta.get("specc_loc"), f"a KV cache cannot be derived at '{n.meta.get('specc_path', n.name)}': "
                        f"{why}", "positions may only feed nodes that read nothing else but weights")
