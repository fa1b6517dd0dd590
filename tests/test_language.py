"""The v1.1 language, behaviour by behaviour, against hand-written PyTorch.

Each test builds a spec (a file in tests/cases/good/ or a small one written here), builds the
equivalent nn.Module by hand, loads the compiled model's weights into it strictly (so the
state_dict keys must be the same), and compares outputs. The last test ejects every good spec
to Python and checks that the generated module computes bit for bit what the compiled one does.
"""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import specc
from compiler.lower import class_name
from compiler.pipeline import compile_spec
from conftest import ROOT, invoke

GOOD = Path(__file__).parent / "cases" / "good"
GOOD_SPECS = sorted(GOOD.glob("*.yaml"))


def _same_weights(hand: nn.Module, model: nn.Module, summary: dict | None = None) -> nn.Module:
    """Load the compiled model's weights into the hand-written one: the keys must match exactly, and so
    must the parameter counts (and the build summary's, when given)."""
    assert sorted(hand.state_dict()) == sorted(model.state_dict())
    assert _n_params(hand) == _n_params(model)
    if summary is not None:
        assert summary["parameters"] == _n_params(hand)
    hand.load_state_dict(model.state_dict(), strict=True)
    return hand.eval()


def _build(source, params=None):
    """The compiled module (in eval mode) and its build summary."""
    compiled = specc.api.compiled(source, params)
    return compiled.module.eval(), compiled.summary


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())  # shared parameters once


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(1234)


# --- seq numbering ----------------------------------------------------------------------------

def test_seq_numbers_like_nn_sequential():
    """The function op (mul) and the absent Dropout take no number; the repeat takes two."""
    model, summary = _build(GOOD / "seq_mlp.yaml")
    hand = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Linear(32, 24), nn.Tanh(),
                         nn.Linear(24, 4))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias",
                                        "5.weight", "5.bias"]
    _same_weights(hand, model, summary)
    x = torch.randn(7, 16)
    with torch.no_grad():
        h = hand[1](hand[0](x)) * 2.0
        assert torch.equal(model(x), hand[5](hand[4](hand[3](hand[2](h)))))


@pytest.mark.parametrize("params, kinds", [
    ({}, ["Linear", "ReLU", "Linear", "Linear", "Tanh", "Linear"]),
    ({"dropout": 0.1}, ["Linear", "ReLU", "Linear", "Linear", "Dropout", "Linear"]),   # Tanh absent instead
    ({"widths": [32, 24, 12]}, ["Linear", "ReLU", "Linear", "Linear", "Linear", "Tanh", "Linear"]),
    ({"widths": []}, ["Linear", "ReLU", "Tanh", "Linear"]),                              # repeat: 0
    ({"final_act": False}, ["Linear", "ReLU", "Linear", "Linear", "Linear"]),
], ids=["default", "dropout", "three-widths", "no-widths", "no-act"])
def test_seq_numbers_follow_presence(params, kinds):
    model = specc.build(GOOD / "seq_mlp.yaml", params)
    assert [type(model.get_submodule(str(k))).__name__ for k in range(len(kinds))] == kinds
    with pytest.raises(AttributeError):
        model.get_submodule(str(len(kinds)))
    widths = params.get("widths", [32, 24])
    sizes = [model.get_submodule(str(2 + k)).out_features for k in range(len(widths))]
    assert sizes == widths  # ${widths[i]}: the repeat index counts the copies
    assert model(torch.randn(3, 16)).shape == (3, 4)


def test_seq_in_a_block_and_a_group_numbers_from_zero():
    text = """
specc: 1
name: nested-seq
inputs: {x: [batch, 4]}
blocks:
  pair:
    seq:
      - {op: Linear, out_features: 6}
      - {op: relu}
      - {op: Linear, out_features: 6, repeat: 2}
layers:
  - {name: a, block: pair}
  - name: b
    seq:
      - {op: sigmoid}
      - {op: Linear, out_features: 3}
      - {op: Linear, out_features: 3, when: false}
      - {op: Softplus}
"""
    model = specc.build(text).eval()
    hand = nn.Module()
    hand.a = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 6))
    hand.b = nn.Sequential(nn.Linear(6, 3), nn.Softplus())
    _same_weights(hand, model)
    assert isinstance(model.get_submodule("b.1"), nn.Softplus)
    x = torch.randn(5, 4)
    a = hand.a[2](hand.a[1](torch.relu(hand.a[0](x))))
    with torch.no_grad():
        assert torch.equal(model(x), hand.b[1](hand.b[0](torch.sigmoid(a))))


# --- when: and repeat: 0 ------------------------------------------------------------------------

PASS_THROUGH = """
specc: 1
name: pass-through
params: {use_norm: false, extra: 0, swap: false, head: true}
inputs: {x: [batch, 8], y: [batch, 8]}
blocks:
  pair:
    inputs: [a, b]
    outputs: [b2, a2]
    layers:
      - {name: a2, op: Linear, from: a, out_features: 8}
      - {name: b2, op: Tanh, from: b}
layers:
  - {name: fc, op: Linear, from: x, out_features: 8}
  - {name: norm, op: LayerNorm, when: $use_norm}
  - {name: more, op: Linear, out_features: 8, repeat: $extra}
  - {name: swapped, block: pair, from: [more, y], when: $swap, pass: [more, y]}   # absent: pass: names what goes on
  - {name: mixed, op: sub, from: [swapped.0, swapped.1]}
  - name: head
    when: "${head and not swap}"
    seq:
      - {op: Linear, out_features: 8}
"""


def test_absent_nodes_pass_their_inputs_on():
    """when: false and repeat: 0 make a node absent: an op passes its input on, a block all of them."""
    model = specc.build(PASS_THROUGH, {"head": False}).eval()
    assert sorted(model.state_dict()) == ["fc.bias", "fc.weight"]
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(model(x, y), model.fc(x) - y)  # swapped.0 is `more` (= norm = fc), swapped.1 is y


def test_present_nodes_match_hand_written():
    model, summary = _build(PASS_THROUGH, {"use_norm": True, "extra": 2, "swap": True})
    hand = nn.Module()
    hand.fc, hand.norm = nn.Linear(8, 8), nn.LayerNorm(8)
    hand.more = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    hand.swapped = nn.Module()
    hand.swapped.a2 = nn.Linear(8, 8)
    _same_weights(hand, model, summary)
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    h = hand.more(hand.norm(hand.fc(x)))
    with torch.no_grad():
        assert torch.equal(model(x, y), torch.tanh(y) - hand.swapped.a2(h))  # the head is absent (swap)


def test_conditional_group_when_present():
    model = specc.build(PASS_THROUGH, {"head": True}).eval()
    assert sorted(model.state_dict()) == ["fc.bias", "fc.weight", "head.0.bias", "head.0.weight"]
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(model(x, y), model.get_submodule("head.0")(model.fc(x) - y))


# --- names: templates and the repeat index ------------------------------------------------------

class _MlpBlock(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.ln, self.fc1, self.act, self.fc2 = nn.LayerNorm(16), nn.Linear(16, hidden), nn.GELU(), nn.Linear(hidden, 16)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.ln(x))))


class _NamedGroups(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layers = nn.Module()
        for i in range(2):
            self.encoder.layers.add_module(f"encoder_layer_{i}", _MlpBlock(16 * (i + 2)))
        self.encoder.ln = nn.LayerNorm(16)
        proj = nn.Module()
        proj.fc = nn.Module()
        proj.fc.proj_0, proj.fc.proj_1 = nn.Linear(16, 16), nn.Linear(16, 16)
        self.heads = nn.Sequential(proj, nn.GELU(), nn.Linear(16, 8))
        self.refine = nn.ModuleList()
        for _ in range(2):
            r = nn.Module()
            r.fc, r.act = nn.Linear(8, 8), nn.Tanh()
            self.refine.append(r)
        self.mix = nn.Module()
        self.mix.fc = nn.Linear(8, 8)

    def forward(self, x):
        for i in range(2):
            x = self.encoder.layers.get_submodule(f"encoder_layer_{i}")(x)
        x = self.encoder.ln(x)
        proj = self.heads[0].fc
        heads = self.heads[2](self.heads[1](proj.proj_1(proj.proj_0(x))))
        r = heads
        for block in self.refine:
            r = block.act(block.fc(r))
        return self.mix.fc(r) + heads


def test_names_templates_and_repeat_index_in_groups():
    model, summary = _build(GOOD / "named_groups.yaml")
    hand = _NamedGroups()
    _same_weights(hand, model, summary)
    # hidden: ${dim * (i + 2)} per copy
    assert model.get_submodule("encoder.layers.encoder_layer_1.fc1").out_features == 48
    assert "heads.0.fc.proj_1.weight" in model.state_dict() and "heads.1.weight" not in model.state_dict()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.equal(model(x), hand(x))


def test_names_template_params_and_count():
    model = specc.build(GOOD / "named_groups.yaml", {"layers": 3, "extra": 1})
    keys = model.state_dict()
    assert "encoder.layers.encoder_layer_2.fc1.weight" in keys and "encoder.layers.encoder_layer_3.ln.weight" not in keys
    assert keys["encoder.layers.encoder_layer_2.fc1.weight"].shape == (64, 16)
    # repeat: 1 (extra) now takes number 1 and pushes GELU to 2 and the last Linear to 3
    assert isinstance(model.get_submodule("heads.1"), nn.Linear) and isinstance(model.get_submodule("heads.2"), nn.GELU)
    assert "heads.3.weight" in keys


def test_repeat_index_in_expressions():
    text = """
specc: 1
name: index
params: {sizes: [5, 7, 9]}
inputs: {x: [batch, 3]}
layers:
  - {name: grow, op: Linear, out_features: "${sizes[i]}", bias: "${i % 2 == 0}", repeat: 3}
  - {name: gate, op: Sigmoid, when: "${sizes[-1] > 8 and not sizes[0] > 5}"}
"""
    model = specc.build(text).eval()
    hand = nn.Module()
    hand.grow = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 7, bias=False), nn.Linear(7, 9))
    _same_weights(hand, model)
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.equal(model(x), torch.sigmoid(hand.grow(x)))


# --- Parameter and Buffer ------------------------------------------------------------------------

def test_parameters_and_buffers_are_state_dict_entries_with_their_inits():
    model = specc.build(GOOD / "buffers_ties.yaml")
    sd = model.state_dict()
    assert {"gain", "shift", "noise", "running", "steps"} <= set(sd)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    assert {"gain", "shift", "noise"} <= set(params) and {"running", "steps"} <= set(buffers)
    assert not set(buffers) & {"gain", "shift", "noise"}
    assert params["gain"].requires_grad and not params["shift"].requires_grad and params["noise"].requires_grad
    assert torch.equal(sd["gain"], torch.ones(8))
    assert torch.equal(sd["shift"], torch.full((8,), 0.25))
    assert torch.equal(sd["running"], torch.zeros(8))
    assert sd["steps"].dtype == torch.int64 and torch.equal(sd["steps"], torch.zeros(1, dtype=torch.int64))
    assert sd["noise"].shape == (4, 8) and sd["noise"].min() >= -0.5 and sd["noise"].max() < 0.5
    assert sd["noise"].unique().numel() == 32


def test_random_inits_have_their_distribution():
    text = """
specc: 1
name: inits
inputs: {x: [batch, 256]}
layers:
  - {name: n, op: Parameter, shape: [256, 256], init: {normal: 0.02}}
  - {name: u, op: Parameter, shape: [256, 256], init: {uniform: [-0.3, 0.1]}}
  - {name: t, op: Parameter, shape: [256, 256], init: {trunc_normal: 0.05}}
  - {name: big, op: Buffer, shape: [256, 256], init: {trunc_normal: 1.0}}
  - {name: y, op: matmul, from: [x, n]}
"""
    sd = specc.build(text).state_dict()
    n, u, t, big = sd["n"], sd["u"], sd["t"], sd["big"]
    assert abs(n.mean()) < 0.001 and abs(n.std() / 0.02 - 1) < 0.03
    assert u.min() >= -0.3 and u.max() < 0.1 and abs(u.mean() + 0.1) < 0.005
    assert abs(u.std() / (0.4 / math.sqrt(12)) - 1) < 0.03
    assert abs(t.mean()) < 0.002 and abs(t.std() / 0.05 - 1) < 0.03
    # torch's trunc_normal_ cuts at [-2, 2]: a standard normal cut there has std 0.8796
    assert big.abs().max() <= 2.0 and abs(big.std() - 0.8796) < 0.02


def test_inits_are_seeded_by_train_seed():
    text = """
specc: 1
name: seeded
inputs: {x: [batch, 4]}
layers:
  - {name: p, op: Parameter, shape: [4, 4], init: {normal: 1.0}}
  - {name: y, op: matmul, from: [x, p]}
"""
    a, b = specc.build(text).state_dict()["p"], specc.build(text).state_dict()["p"]
    c = compile_spec(specc.load(text), seed=7).module.state_dict()["p"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(compile_spec(specc.load(text), seed=0).module.state_dict()["p"], a)  # the default seed is 0


def test_non_persistent_buffer_is_not_in_state_dict():
    text = """
specc: 1
name: scale
inputs: {x: [batch, 4]}
layers:
  - {name: scale, op: Buffer, shape: [4], init: {constant: 2.0}, persistent: false}
  - {name: y, op: mul, from: [x, scale]}
"""
    model = specc.build(text)
    assert "scale" in dict(model.named_buffers())
    assert "scale" not in model.state_dict()


# --- tie -------------------------------------------------------------------------------------

class _BuffersTies(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.empty(8))
        self.shift = nn.Parameter(torch.empty(8), requires_grad=False)
        self.noise = nn.Parameter(torch.empty(4, 8))
        self.register_buffer("running", torch.empty(8))
        self.register_buffer("steps", torch.empty(1, dtype=torch.int64))
        self.enc = nn.Linear(8, 8, bias=False)
        self.dec = nn.Linear(8, 8, bias=False)
        self.dec.weight = self.enc.weight
        self.proj, self.proj2 = nn.Linear(8, 4), nn.Linear(8, 4)
        self.proj2.bias = self.proj.bias

    def forward(self, x):
        shifted = x * self.gain + self.shift
        centred = shifted - self.running
        return self.dec(self.enc(shifted)), self.proj(shifted) + self.proj2(centred)


def test_tie_shares_one_parameter():
    compiled = specc.api.compiled(GOOD / "buffers_ties.yaml")
    model = compiled.module
    assert model.dec.weight is model.enc.weight and model.proj2.bias is model.proj.bias
    sd = model.state_dict()
    assert {"enc.weight", "dec.weight", "proj.bias", "proj2.bias"} <= set(sd)
    hand = _BuffersTies()
    _same_weights(hand, model)
    assert _n_params(model) == _n_params(hand) == 8 + 8 + 32 + 64 + 36 + 32
    assert compiled.summary["parameters"] == _n_params(hand)
    assert compiled.summary["trainable_parameters"] == _n_params(hand) - 8  # shift is frozen
    x = torch.randn(3, 5, 8)
    out, hout = model(x), hand(x)
    assert compiled.module.specc_output_names == ["dec", "merged"]
    assert all(torch.equal(a, b) for a, b in zip(out, hout))
    (out[0].sum() + out[1].square().sum()).backward()
    (hout[0].sum() + hout[1].square().sum()).backward()
    assert torch.allclose(model.enc.weight.grad, hand.enc.weight.grad)  # both uses flow into one tensor
    assert torch.allclose(model.proj.bias.grad, hand.proj.bias.grad)


# --- attention masks ---------------------------------------------------------------------------

def _masks(batch, time, src):
    padding = torch.zeros(batch, src, dtype=torch.bool)
    padding[0, -2:] = True
    mask = torch.zeros(time, src, dtype=torch.bool)
    for t in range(time):
        mask[t, t + 3:] = True  # each query sees at least three keys, none of them padding
    return padding, mask


MHA_SLOTS = """
specc: 1
name: mha-slots
inputs:
  x: [batch, time, 16]
  memory: [batch, src, 16]
  padding: {shape: [batch, src], dtype: bool}
  mask: {shape: [time, src], dtype: bool}
layers:
  - {name: cross, op: MultiheadAttention, num_heads: 4, batch_first: true, need_weights: false,
     from: {query: x, key: memory, value: memory, key_padding_mask: padding, attn_mask: mask}}
  - {name: masked_only, op: MultiheadAttention, num_heads: 2, batch_first: true,
     from: {query: x, value: memory, attn_mask: mask, key: memory}}
outputs: {out: cross.0, other: masked_only.0, weights: masked_only.1}
"""


def _mha_hand():
    hand = nn.Module()
    hand.cross = nn.MultiheadAttention(16, 4, batch_first=True)
    hand.masked_only = nn.MultiheadAttention(16, 2, batch_first=True)
    return hand


def test_multihead_attention_masks_by_slot_name():
    model, summary = _build(MHA_SLOTS)
    hand = _same_weights(_mha_hand(), model, summary)
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    padding, mask = _masks(2, 5, 7)
    with torch.no_grad():
        out, other, weights = model(x, memory, padding, mask)
        expect = hand.cross(x, memory, memory, key_padding_mask=padding, attn_mask=mask, need_weights=False)[0]
        assert torch.equal(out, expect)
        e_other, e_weights = hand.masked_only(x, memory, memory, attn_mask=mask)
        assert torch.equal(other, e_other) and torch.equal(weights, e_weights)
        # the masks reach the module: without them the results differ
        assert not torch.allclose(out, hand.cross(x, memory, memory, attn_mask=mask, need_weights=False)[0], atol=1e-4)
        assert not torch.allclose(other, hand.masked_only(x, memory, memory)[0], atol=1e-4)
        assert (weights[:, 0, 3:] == 0).all()  # query 0 sees keys 0..2 only
    assert model.specc_output_names == ["out", "other", "weights"]




def test_multihead_attention_is_causal_equals_square_subsequent_mask():
    model = specc.build(GOOD / "mha_masks.yaml").eval()
    hand = nn.Module()
    hand.cross = nn.MultiheadAttention(16, 4, batch_first=True)
    hand.self_attn = nn.MultiheadAttention(16, 4, batch_first=True)
    hand.ln = nn.LayerNorm(16)
    hand.weights = nn.MultiheadAttention(16, 2, batch_first=True)
    _same_weights(hand, model)
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    padding, mask = _masks(2, 5, 7)
    with torch.no_grad():
        hidden, weights = model(x, memory, padding, mask)
        h = x + hand.cross(x, memory, memory, key_padding_mask=padding, attn_mask=mask, need_weights=False)[0]
        causal = nn.Transformer.generate_square_subsequent_mask(5)
        expect = hand.ln(hand.self_attn(h, h, h, attn_mask=causal, need_weights=False)[0])
        torch.testing.assert_close(hidden, expect, rtol=1e-6, atol=1e-6)
        plain = hand.ln(hand.self_attn(h, h, h, need_weights=False)[0])
        assert not torch.allclose(hidden, plain, atol=1e-4)  # is_causal is not a no-op
        assert torch.equal(weights, hand.weights(x, memory, memory)[1])
    assert model.specc_output_names == ["hidden", "attn_weights"]


def _layer(heads):
    return nn.TransformerEncoderLayer(16, heads, 32, dropout=0.0, batch_first=True)


def test_encoder_layer_padding_mask_by_slot_name():
    text = """
specc: 1
name: enc-pad
inputs:
  x: [batch, time, 16]
  pad: {shape: [batch, time], dtype: bool}
  mask: {shape: [time, time], dtype: bool}
layers:
  - {name: padded, op: TransformerEncoderLayer, nhead: 4, dim_feedforward: 32, dropout: 0.0, batch_first: true,
     from: {src: x, src_key_padding_mask: pad}}
  - {name: masked, op: TransformerEncoderLayer, nhead: 2, dim_feedforward: 32, dropout: 0.0, batch_first: true,
     from: {src_mask: mask, src: padded}}
"""
    model = specc.build(text).eval()
    hand = nn.Module()
    hand.padded, hand.masked = _layer(4), _layer(2)
    _same_weights(hand, model)
    x = torch.randn(3, 6, 16)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, -2:] = True
    mask = torch.ones(6, 6, dtype=torch.bool).triu(2)  # True: not allowed to attend
    with torch.no_grad():
        expect = hand.masked(hand.padded(x, src_key_padding_mask=pad), src_mask=mask)
        assert torch.equal(model(x, pad, mask), expect)
        assert not torch.allclose(model(x, torch.zeros_like(pad), mask), expect, atol=1e-4)
        assert not torch.allclose(model(x, pad, torch.zeros_like(mask)), expect, atol=1e-4)


def test_encoder_layer_is_causal_equals_square_subsequent_mask():
    model = specc.build(GOOD / "encoder_causal.yaml").eval()
    hand = nn.Module()
    hand.layers = nn.Sequential(_layer(2), _layer(2))
    hand.padded = _layer(4)
    hand.norm = nn.LayerNorm(16)
    _same_weights(hand, model)
    x = torch.randn(3, 6, 16)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, -2:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    with torch.no_grad():
        got = model(x, pad)
        h = hand.layers[1](hand.layers[0](x, src_mask=causal), src_mask=causal)
        torch.testing.assert_close(got, hand.norm(hand.padded(h, src_key_padding_mask=pad)), rtol=1e-6, atol=1e-6)
        plain = hand.norm(hand.padded(hand.layers[1](hand.layers[0](x)), src_key_padding_mask=pad))
        assert not torch.allclose(got, plain, atol=1e-4)  # is_causal is not a no-op


# --- tensor ops -------------------------------------------------------------------------------

def test_tensor_functions_match_torch():
    model = specc.build(GOOD / "tensor_ops.yaml")
    x = torch.randn(3, 6, 8)
    keep = torch.rand(3, 6, 8) > 0.5
    got = dict(zip(model.specc_output_names, model(x, keep)))
    a, b = torch.chunk(x, 2, dim=2)
    filled = torch.masked_fill(x, keep, -1.5)
    picked = torch.where(keep, x, 0.0)
    expect = {
        "gram": torch.einsum("bik,bjk->bij", a, b),
        "odd": torch.narrow(x, 1, 1, 3)[..., 1::2],
        "tail": x[:, -2:],
        "mixed": torch.unbind(x, 1)[0] + torch.select(x, 1, 3),
        "chosen": torch.where(keep, x, picked),
        "bmm": torch.einsum("bik,bjk->bij", torch.split(x, [2, 4], 1)[1], filled),
    }
    assert list(got) == list(expect)
    for k in expect:
        assert torch.equal(got[k], expect[k]), k
    assert (got["chosen"][~keep] == 0).all()


def test_chunk_unbind_select_on_symbolic_dims():
    text = """
specc: 1
name: pieces
inputs: {x: [batch, time, 6]}
layers:
  - {name: heads, op: chunk, chunks: 3, dim: -1}
  - {name: mid, op: mul, from: [heads.0, heads.2]}
  - {name: steps, op: unbind, from: x, dim: 0}
  - {name: first, op: add, from: [steps.0, steps.1]}
  - {name: last, op: select, from: x, dim: 1, index: -1}
  - {name: win, op: narrow, from: x, dim: 1, start: 0, length: 2}
  - {name: ev, op: slice, from: x, dim: 1, step: 2}
  - {name: pos, op: arange, from: x, dim: 1}
outputs: [mid, first, last, win, ev, pos]
"""
    compiled = specc.api.compiled(text)
    assert compiled.summary["outputs"] == {"mid": "(batch, time, 2)", "first": "(time, 6)", "last": "(batch, 6)",
                                           "win": "(batch, 2, 6)", "ev": "(batch, ceil(time/2), 6)", "pos": "(time,)"}
    x = torch.randn(2, 5, 6)
    mid, first, last, win, ev, pos = compiled.module(x)
    assert torch.equal(mid, x[..., :2] * x[..., 4:])
    assert torch.equal(first, x[0] + x[1])
    assert torch.equal(last, x[:, -1]) and torch.equal(win, x[:, :2]) and torch.equal(ev, x[:, ::2])
    assert pos.dtype == torch.int64 and torch.equal(pos, torch.arange(5))


class _VitToken(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, 12, 4, 4)
        self.class_token = nn.Parameter(torch.empty(1, 1, 12))
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(torch.empty(1, 17, 12))
        self.encoder.register_buffer("scale", torch.empty(12))
        self.encoder.ln = nn.LayerNorm(12, eps=1e-6)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.conv_proj(x).reshape(x.shape[0], 12, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.encoder.ln((x + self.encoder.pos_embedding) * self.encoder.scale)
        return self.head(x[:, 0])


def test_class_token_expand_cat_select():
    model, summary = _build(GOOD / "vit_token.yaml")
    hand = _VitToken()
    _same_weights(hand, model, summary)
    assert torch.equal(model.encoder.scale, torch.full((12,), 0.5))
    assert 0 < model.class_token.std() < 0.06  # {normal: 0.02}, 12 values
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), hand(x))
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 5)  # expand follows the batch


class _Attention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.reshape(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class _Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(n_embd), _Attention(n_embd, n_head), nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _TinyGpt(nn.Module):
    def __init__(self, vocab=61, block_size=16, n_embd=16, n_head=2, n_layer=2):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab, n_embd)
        self.transformer.wpe = nn.Embedding(block_size, n_embd)
        self.transformer.h = nn.ModuleList(_Block(n_embd, n_head) for _ in range(n_layer))
        self.transformer.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx):
        pos = torch.arange(idx.shape[1])
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def test_gpt_block_split_reshape_causal_sdpa_and_tie():
    compiled = specc.api.compiled(GOOD / "gpt_block.yaml")
    model = compiled.module.eval()
    hand = _TinyGpt()
    _same_weights(hand, model)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert compiled.summary["parameters"] == _n_params(hand)
    assert compiled.summary["outputs"] == {"logits": "(batch, time, 61)"}
    idx = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        out = model(idx)
        assert torch.equal(out, hand(idx))
        changed = idx.clone()
        changed[:, -1] = (changed[:, -1] + 1) % 61
        assert torch.equal(model(changed)[:, :-1], out[:, :-1])  # causal: earlier positions do not see the last


# --- dims constraints ------------------------------------------------------------------------

def test_dims_constraints_render_symbolic_shapes():
    text = (GOOD / "resnet_shortcut.yaml").read_text()
    compiled = specc.api.compiled(text)
    assert compiled.summary["outputs"] == {"logits": "(batch, 10)", "features": "(batch, 32, height/4, width/4)"}
    shapes = {n["name"]: n["shape"] for n in compiled.summary["nodes"]}
    assert shapes["layer2.0.downsample.1"] == "(batch, 16, height/2, width/2)"
    free = text.replace("dims:\n  height: {divisible_by: 4, min: 8}\n  width: {divisible_by: 4}\n", "")
    assert free != text
    loose = specc.api.compiled(free)
    assert loose.summary["outputs"]["features"] == "(batch, 32, ceil(height/4), ceil(width/4))"
    assert compiled.typed.dims["height"].divisible_by == 4 and compiled.typed.dims["height"].min == 8


def test_dims_unet_summary_and_run():
    compiled = specc.api.compiled(GOOD / "dims_unet.yaml")
    shapes = {n["name"]: n["shape"] for n in compiled.summary["nodes"]}
    assert shapes["down2"] == "(batch, 8, height/4, width/4)"
    assert shapes["cat2"] == "(batch, 16, height/2, width/2)"
    assert compiled.summary["outputs"] == {"head": "(batch, 2, height, width)"}
    assert compiled.module(torch.randn(2, 1, 12, 20)).shape == (2, 2, 12, 20)


# --- outputs: and the CLI -------------------------------------------------------------------------

def test_outputs_mapping_names_the_runs_outputs(tmp_path):
    r = invoke("build", GOOD / "resnet_shortcut.yaml", "--out", tmp_path / "run", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["outputs"] == {"logits": "(batch, 10)", "features": "(batch, 32, height/4, width/4)"}
    model = specc.build(GOOD / "resnet_shortcut.yaml").eval()
    assert model.specc_output_names == ["logits", "features"]
    logits, features = model(torch.randn(2, 3, 8, 12))
    assert logits.shape == (2, 10) and features.shape == (2, 32, 2, 3)


def test_set_flow_list_and_bool_through_the_cli(tmp_path):
    r = invoke("build", ROOT / "specs/zoo/resnet.yaml", "--set", "layers=[3,4,6,3]", "--set", "bottleneck=true",
               "--set", "num_classes=10", "--out", tmp_path / "r50", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "r50" / "summary.json").read_text())
    # torchvision's resnet50 has 25,557,032 parameters; with a 10-class head instead of 1000:
    assert summary["parameters"] == 25_557_032 - (2048 * 1000 + 1000) + (2048 * 10 + 10)
    names = {n["name"] for n in summary["nodes"]}
    assert {"layer1.2.conv3", "layer2.3.conv3", "layer3.5.conv3", "layer4.2.conv3", "layer1.0.downsample.0"} <= names
    assert not names & {"layer1.3.conv1", "layer3.6.conv1", "layer4.3.conv1"}
    spec_yaml = (tmp_path / "r50" / "spec.yaml").read_text()
    assert "bottleneck: true" in spec_yaml


# --- eject round trip ---------------------------------------------------------------------------

def _import(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _size(decl):
    """A small size that meets the dim's constraints."""
    size = max(decl.min, 4)
    size = -(-size // decl.divisible_by) * decl.divisible_by
    assert decl.allows(size)
    return size


def _sample(spec):
    xs = []
    for inp in spec.inputs.values():
        shape = [_size(spec.dims[d]) if isinstance(d, str) else d for d in inp.shape]
        if inp.dtype == "bool":
            x = torch.rand(*shape) > 0.3
            if x.dim() >= 2:
                x[..., 0] = False  # never a row with every key masked
            xs.append(x)
        elif inp.dtype.startswith("int"):
            xs.append(torch.randint(int(inp.range[0]), int(inp.range[1]), shape))
        else:
            xs.append(torch.randn(*shape))
    return xs


def test_there_are_good_specs():
    assert len(GOOD_SPECS) >= 8


@pytest.mark.parametrize("path", GOOD_SPECS, ids=lambda p: p.stem)
def test_good_spec_ejects_to_identical_pytorch(path, tmp_path):
    compiled = specc.api.compiled(path)
    out = tmp_path / f"{path.stem}_model.py"
    specc.api.emit_python(compiled, out)
    module = _import(out)
    hand = getattr(module, class_name(compiled.spec.name))().eval()
    hand.load_state_dict(compiled.module.state_dict(), strict=True)
    model = compiled.module.eval()
    xs = _sample(compiled.spec)
    with torch.no_grad():
        a, b = model(*xs), hand(*xs)
    a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    assert len(a) == len(b) == len(compiled.typed.graph.outputs)
    for x, y in zip(a, b):
        assert x.shape == y.shape and torch.equal(x, y)


def test_names_template_in_a_seq_ejects(tmp_path):
    text = """
specc: 1
name: seq-names
inputs: {x: [batch, 4]}
seq:
  - {op: Linear, out_features: 4, repeat: 2, names: "fc_{i}"}
  - {op: ReLU}
"""
    compiled = specc.api.compiled(text)
    assert sorted(compiled.module.state_dict()) == ["fc_0.bias", "fc_0.weight", "fc_1.bias", "fc_1.weight"]
    out = tmp_path / "seq_names.py"
    specc.api.emit_python(compiled, out)
    hand = _import(out).SeqNames()
    hand.load_state_dict(compiled.module.state_dict(), strict=True)
    x = torch.randn(3, 4)
    assert torch.equal(hand(x), compiled.module(x))
