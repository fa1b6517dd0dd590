"""The KV-cache pass (compiler/kvcache.py): a decoder derived from the one fx graph, checked against a full
recompute of the same model: greedy tokens, padded batches, per-row positions, static caches, refusals."""
import pytest
import torch

import specc
from compiler.errors import SpecError
from compiler.kvcache import decoder, derive
from conftest import ROOT, ZOO_SMALL

GPT = {"vocab_size": 61, "block_size": 40, "n_layer": 2, "n_head": 2, "n_embd": 32}


@pytest.fixture(scope="module")
def gpt():
    compiled = specc.api.compiled(ROOT / "specs/zoo/gpt.yaml", GPT)
    compiled.module.eval()
    return compiled


def recompute(model, prompt, n):
    """Greedy decoding the slow way: the whole sequence through the full model for every token."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            out = model(torch.tensor([ids]))
            ids.append(int(out[0, -1].argmax()))
    return ids[len(prompt):]


def greedy(dec, prompts, n):
    logits, out = dec.start(prompts), [[] for _ in prompts]
    for _ in range(n):
        nxt = logits.argmax(-1)
        for row, t in zip(out, nxt.tolist()):
            row.append(t)
        logits = dec.step(nxt)
    return out


def test_greedy_tokens_equal_a_full_recompute(gpt):
    dec = decoder(gpt)
    prompt = [5, 17, 3, 42, 8]
    assert greedy(dec, [prompt], 20) == [recompute(gpt.module, prompt, 20)]


def test_prompts_of_different_lengths_in_one_batch_equal_each_alone(gpt):
    dec = decoder(gpt)
    prompts = [[7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [30, 31, 32, 33]]
    batched = greedy(dec, prompts, 12)
    assert batched == [greedy(dec, [p], 12)[0] for p in prompts]
    assert batched == [recompute(gpt.module, p, 12) for p in prompts]
    # and the logits, not only their argmax: row 0 is padded by 8, its numbers are its own
    first = dec.start(prompts)
    for b, p in enumerate(prompts):
        with torch.no_grad():
            alone = gpt.module(torch.tensor([p]))[0, -1]
        torch.testing.assert_close(first[b], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("stem", ["gpt", "gpt2", "llama", "qwen2"])
def test_every_causal_lm_of_the_zoo_decodes_as_a_full_recompute(stem):
    """One pass for every architecture: learned positions (nanoGPT, GPT-2 with its dropout module), RoPE with
    GQA (Llama), q/k/v biases (Qwen2)."""
    compiled = specc.api.compiled(ROOT / f"specs/zoo/{stem}.yaml", ZOO_SMALL[stem])
    model = compiled.module.eval()
    prompts = [[5, 6, 7, 8, 9], [11, 12]]
    assert greedy(decoder(compiled), prompts, 6) == [recompute(model, p, 6) for p in prompts]


def test_the_cache_is_static_and_the_weights_are_shared(gpt):
    dec = decoder(gpt)
    dec.start([[1, 2, 3], [4, 5]])
    slot = dec.graph.get_submodule("kv_cache.0")
    assert tuple(slot.k.shape) == (2, 2, 40, 16)  # (batch, heads, the time dim's max, head_dim), allocated once
    where = slot.k.data_ptr()
    for t in range(5):
        dec.step(torch.tensor([t, t]))
    assert slot.k.data_ptr() == where and dec.length == 8
    assert dec.graph.get_parameter("lm_head.weight") is gpt.module.get_parameter("lm_head.weight")
    assert not any(k.startswith("kv_cache") for k in dec.graph.state_dict())
    assert "kv_cache" in dec.graph.code and "is_causal" not in dec.graph.code


def test_positions_offset_by_the_cache_reach_the_position_embedding(gpt):
    """Every arange over time becomes position_ids; the nodes fed by positions alone run per row."""
    step = derive(gpt)
    assert "torch.arange" not in step.code and "self.positions(position_ids)" in step.code
    assert "self.transformer.wpe(position_ids)" in step.get_submodule("positions").fn.code


PER_HEAD_POSITIONS = """specc: 1
name: per-head-positions
params: {vocab: 50, dim: 16, heads: 2, max: 24}
inputs:
  idx: {shape: [batch, time], dtype: int64, range: [0, $vocab]}
dims: {time: {max: $max}}
layers:
  - {name: tok, op: Embedding, num_embeddings: $vocab, embedding_dim: $dim}
  - {name: pos, op: arange, from: idx, dim: 1}                                     # (T,)
  - {name: rot, op: Embedding, from: pos, num_embeddings: $max, embedding_dim: 8}   # (T, 8): per position
  - {name: q_lin, op: Linear, from: tok, out_features: $dim}
  - {name: q, op: reshape, shape: [batch, time, $heads, 8]}
  - {name: qh, op: transpose, dim0: 1, dim1: 2}                                      # (B, H, T, 8)
  - {name: qr, op: mul, from: [qh, rot]}                                             # (T, 8) meets (B, H, T, 8)
  - {name: k_lin, op: Linear, from: tok, out_features: $dim}
  - {name: k, op: reshape, shape: [batch, time, $heads, 8]}
  - {name: kh, op: transpose, dim0: 1, dim1: 2}
  - {name: kr, op: mul, from: [kh, rot]}
  - {name: v_lin, op: Linear, from: tok, out_features: $dim}
  - {name: v, op: reshape, shape: [batch, time, $heads, 8]}
  - {name: vh, op: transpose, dim0: 1, dim1: 2}
  - {name: att, op: scaled_dot_product_attention, from: [qr, kr, vh], is_causal: true}
  - {op: transpose, dim0: 1, dim1: 2}
  - {op: reshape, shape: [batch, time, $dim]}
  - {name: head, op: Linear, out_features: $vocab}
"""


def test_position_values_that_meet_4d_tensors_line_up_per_row():
    """A position table (T, 8) multiplies (B, H, T, 8), as RoPE's cos/sin do: per row it is (B, 1, T, 8)."""
    compiled = specc.api.compiled(PER_HEAD_POSITIONS)
    dec = decoder(compiled)  # verified against the full model on a padded batch inside
    prompts = [[3, 4, 5, 6, 7, 8], [9, 10]]
    assert greedy(dec, prompts, 8) == [recompute(compiled.module.eval(), p, 8) for p in prompts]
    assert "align_rows" in dec.graph.code


ATT_LINE = next(i for i, line in enumerate(PER_HEAD_POSITIONS.splitlines(), 1) if "name: att," in line)


ROPE_GQA = """specc: 1
name: tiny-llama
params: {vocab: 50, dim: 32, heads: 4, kv_heads: 2, hd: 8, max: 48, base: 10000.0, depth: 2}
inputs:
  input_ids: {shape: [batch, time], dtype: int64, range: [0, $vocab]}
dims: {time: {max: $max}}
blocks:
  rope:                                                    # x * cos + rotate_half(x) * sin
    inputs: [x, cos, sin]
    layers:
      - {name: x1, op: slice, from: x, dim: -1, end: "${hd // 2}"}
      - {name: x2, op: slice, from: x, dim: -1, start: "${hd // 2}"}
      - {name: neg, op: neg, from: x2}
      - {name: rotated, op: cat, from: [neg, x1], dim: -1}
      - {name: a, op: mul, from: [x, cos]}
      - {name: b, op: mul, from: [rotated, sin]}
      - {op: add, from: [a, b]}
  layer:
    inputs: [x, cos, sin]
    layers:
      - {name: norm, op: RMSNorm, from: x, eps: 1.0e-6}
      - {name: q_proj, op: Linear, out_features: "${heads * hd}", bias: false}
      - {name: q, op: reshape, shape: [batch, time, $heads, $hd]}
      - {name: qt, op: transpose, dim0: 1, dim1: 2}                                # (B, 4, T, 8)
      - {name: k_proj, op: Linear, from: norm, out_features: "${kv_heads * hd}", bias: false}
      - {name: k, op: reshape, shape: [batch, time, $kv_heads, $hd]}
      - {name: kt, op: transpose, dim0: 1, dim1: 2}                                # (B, 2, T, 8)
      - {name: v_proj, op: Linear, from: norm, out_features: "${kv_heads * hd}", bias: false}
      - {name: v, op: reshape, shape: [batch, time, $kv_heads, $hd]}
      - {name: vt, op: transpose, dim0: 1, dim1: 2}
      - {name: qr, block: rope, from: [qt, cos, sin]}
      - {name: kr, block: rope, from: [kt, cos, sin]}
      - {name: att, op: scaled_dot_product_attention, from: [qr, kr, vt], is_causal: true, enable_gqa: true}
      - {op: transpose, dim0: 1, dim1: 2}
      - {op: reshape, shape: [batch, time, $dim]}
      - {name: o_proj, op: Linear, out_features: $dim, bias: false}
      - {name: out, op: add, from: [x, o_proj]}
    outputs: [out, cos, sin]                                                         # copy i feeds copy i+1
layers:
  - {name: embed, op: Embedding, from: input_ids, num_embeddings: $vocab, embedding_dim: $dim}
  - {name: exponents, op: arange, start: 0, end: $hd, step: 2, dtype: int64}
  - {name: ratio, op: to, dtype: float32}
  - {name: scaled, op: div, other: $hd}
  - {name: powers, op: pow, input: $base}
  - {name: inv_freq, op: div, input: 1.0}
  - {name: t, op: arange, end: time, dtype: float32}                                # positions, as a range
  - {name: freqs, op: outer, from: [t, inv_freq]}
  - {name: emb, op: cat, from: [freqs, freqs], dim: -1}                              # (T, 8)
  - {name: cos, op: cos, from: emb}
  - {name: sin, op: sin, from: emb}
  - {name: layers, block: layer, repeat: $depth, from: [embed, cos, sin]}
  - {name: norm, op: RMSNorm, from: layers.0, eps: 1.0e-6}
  - {name: lm_head, op: Linear, out_features: $vocab, bias: false}
outputs: {logits: lm_head}
"""


def test_rope_and_grouped_query_attention_decode_per_row():
    """Llama's layout: RoPE from positions `arange(end: time)`, computed per row, and GQA: the cache holds
    the 2 key/value heads, not the 4 query heads."""
    compiled = specc.api.compiled(ROPE_GQA)
    dec = decoder(compiled)
    prompts = [[3, 4, 5, 6, 7, 8, 9], [10, 11]]
    assert greedy(dec, prompts, 10) == [recompute(compiled.module.eval(), p, 10) for p in prompts]
    assert tuple(dec.graph.get_submodule("kv_cache.1").k.shape) == (2, 2, 48, 8)
    assert "torch.cos" in dec.graph.get_submodule("positions").fn.code


def _refusal(text):
    with pytest.raises(SpecError) as info:
        decoder(specc.api.compiled(text))
    d = info.value.diagnostics[0]
    return d.line, d.message, d.hint


def test_a_model_that_mixes_tokens_outside_attention_is_refused():
    # the mean over time makes every position see the future: no cache can reproduce it
    text = PER_HEAD_POSITIONS.replace("  - {name: head, op: Linear, out_features: $vocab}",
                                      "  - {name: avg, op: mean, dim: 1, keepdim: true}\n"
                                      "  - {op: add, from: [tok, avg]}\n"
                                      "  - {name: head, op: Linear, out_features: $vocab}")
    line, message, hint = _refusal(text)
    assert line == ATT_LINE  # the attention node
    assert message == ("the KV-cache decoder derived from this model does not compute what the full model "
                       "computes: tokens meet outside causal attention")


def test_attention_that_is_not_causal_is_refused():
    line, message, _ = _refusal(PER_HEAD_POSITIONS.replace("is_causal: true", "is_causal: false"))
    assert (line, message) == (ATT_LINE, "attention 'att' is not causal (is_causal: true without a mask); a KV cache "
                                    "cannot decode it token by token")


def test_a_time_dim_without_a_max_is_refused():
    line, message, hint = _refusal(PER_HEAD_POSITIONS.replace("dims: {time: {max: $max}}\n", "")
                                   .replace("num_embeddings: $max", "num_embeddings: 24"))
    assert message == "the KV cache is preallocated up to the time dim's max; 'time' has none"
    assert hint == "declare it: dims: {time: {max: 1024}}"


def test_a_model_without_tokens_is_not_a_language_model():
    line, message, _ = _refusal(ROOT / "specs/transformer_encoder.yaml")
    assert message == "a KV cache needs a causal language model: one int64 input [batch, time]"
