"""The language additions of issues 16 and 18, against torch itself: the new ops, sizes read from
dims (and expressions of them), constants folded at build, `trainable: false`, given inits and
node names. Export parity of every op is in test_export_corpus; golden errors in cases/bad."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import specc
from compiler.lower import class_name
from conftest import ROOT

GOOD = ROOT / "tests/cases/good"


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(7)


def _eject(compiled, tmp_path):
    out = specc.api.emit_python(compiled, tmp_path / "model.py")
    spec = importlib.util.spec_from_file_location("ejected_v12", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name(compiled.spec.name))()


MATH = """specc: 1
name: math
inputs: {x: [batch, 5], y: [batch, 5], ids: {shape: [batch, 5], dtype: int64, range: [0, 3]}}
layers:
  - {name: c, op: cos, from: x}
  - {name: s, op: sin, from: x}
  - {name: r, op: rsqrt, from: y}
  - {name: inv, op: reciprocal, from: y}
  - {name: band, op: clamp, from: x, min: -0.5, max: 0.5}
  - {name: gt, op: gt, from: x, other: 0.0}
  - {name: le, op: le, from: [x, y]}
  - {name: ne, op: ne, from: ids, other: 2}
  - {name: both, op: logical_and, from: [gt, le]}
  - {name: either, op: logical_or, from: [both, ne]}
  - {name: none, op: logical_not, from: either}
  - {name: f, op: to, from: none, dtype: float32}
  - {name: run, op: cumsum, from: ids, dim: 1}
  - {name: left, op: sub, from: x, input: 1.0}
  - {name: base, op: pow, from: x, input: 2.0}
  - {name: wide, op: repeat_interleave, from: x, repeats: 2, dim: 1}
  - {name: lower, op: tril, from: x, diagonal: 1}
  - {name: upper, op: triu, from: x}
  - {name: o, op: outer, from: [c, s], when: false}
  - {name: zeros, op: zeros_like, from: ids, dtype: float32}
  - {name: ones, op: ones_like, from: x}
outputs: [c, s, r, inv, band, f, run, left, base, wide, lower, upper, zeros, ones]
"""


def test_elementwise_and_logic_ops_compute_what_torch_computes():
    model = specc.build(MATH).eval()
    x, y = torch.randn(3, 5), torch.rand(3, 5) + 0.1
    ids = torch.randint(0, 3, (3, 5))
    gt, le = x > 0, x <= y
    none = ~((gt & le) | (ids != 2))
    want = [x.cos(), x.sin(), y.rsqrt(), 1 / y, x.clamp(-0.5, 0.5), none.float(), ids.cumsum(1), 1.0 - x, 2.0 ** x,
            x.repeat_interleave(2, dim=1), x.tril(1), x.triu(), torch.zeros(3, 5), torch.ones(3, 5)]
    got = model(x, y, ids)
    assert [g.dtype for g in got] == [w.dtype for w in want]
    assert all(torch.equal(g, w) for g, w in zip(got, want))


SIZES = """specc: 1
name: sizes
inputs: {x: [batch, time, 4]}
layers:
  - {name: head, op: slice, from: x, dim: 1, end: time - 1}
  - {name: tail, op: narrow, from: x, dim: 1, start: 1, length: time - 1}
  - {name: steps, op: arange, start: 1, end: time + 1, dtype: float32}
  - {name: grid, op: full, shape: [batch, "2 * time"], fill_value: 0.5}
  - {name: flat, op: reshape, from: x, shape: [batch, time * 4]}
  - {name: rows, op: meshgrid, from: [steps, steps], indexing: xy}
outputs: [head, tail, steps, grid, flat, rows.0]
"""


@pytest.mark.parametrize("batch,time", [(2, 3), (1, 7)])
def test_sizes_may_be_dims_and_expressions_of_them(batch, time):
    compiled = specc.api.compiled(SIZES)
    shapes = {n["name"]: n["shape"] for n in compiled.summary["nodes"]}
    assert [shapes[k] for k in ("head", "tail", "steps", "grid", "flat")] == [
        "(batch, time-1, 4)", "(batch, time-1, 4)", "(time,)", "(batch, 2*time)", "(batch, 4*time)"]
    x = torch.randn(batch, time, 4)
    head, tail, steps, grid, flat, rows = compiled.module(x)
    r = torch.arange(1, time + 1, dtype=torch.float32)
    assert torch.equal(head, x[:, :time - 1]) and torch.equal(tail, x[:, 1:])
    assert torch.equal(steps, r) and torch.equal(grid, torch.full((batch, 2 * time), 0.5))
    assert torch.equal(flat, x.reshape(batch, -1)) and torch.equal(rows, torch.meshgrid(r, r, indexing="xy")[0])


def test_index_select_takes_a_tables_rows_by_ids_of_any_shape():
    text = """specc: 1
name: rows
inputs: {ids: {shape: [batch, time], dtype: int64, range: [0, 9]}}
layers:
  - {name: table, op: Parameter, shape: [10, 6], init: {normal: 1.0}}
  - {name: rows, op: index_select, from: [table, ids]}
  - {name: small, op: slice, from: table, dim: 1, end: 5}
  - {name: cols, op: index_select, from: [small, ids], dim: -1}
outputs: [rows, cols]
"""
    model = specc.build(text)
    ids = torch.randint(0, 5, (2, 5))
    rows, cols = model(ids)
    assert torch.equal(rows, F.embedding(ids, model.table)) and torch.equal(cols, model.table[:, :5][:, ids])


def test_grouped_query_attention_equals_repeated_key_value_heads():
    text = """specc: 1
name: gqa
inputs: {q: [batch, 4, time, 8], k: [batch, 2, time, 8], v: [batch, 2, time, 8]}
layers:
  - {name: causal, op: scaled_dot_product_attention, from: [q, k, v], is_causal: true, enable_gqa: true}
  - {name: keep, op: full, shape: [time, time], fill_value: true, dtype: bool}
  - {name: past, op: tril}
  - {name: masked, op: scaled_dot_product_attention, from: [q, k, v, past], enable_gqa: true}
outputs: [causal, masked]
"""
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    causal, masked = specc.build(text)(q, k, v)
    k2, v2 = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    want = F.scaled_dot_product_attention(q, k2, v2, is_causal=True)
    assert torch.allclose(causal, want, atol=1e-6) and torch.allclose(masked, want, atol=1e-6)


def test_rope_tables_are_computed_at_build_as_non_persistent_buffers(tmp_path):
    compiled = specc.api.compiled(GOOD / "rope_decoder.yaml")
    model = compiled.module
    dim, base = 4, 10000.0  # as Hugging Face's LlamaRotaryEmbedding computes inv_freq
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    emb = torch.cat([torch.outer(torch.arange(32).float(), inv_freq)] * 2, dim=-1)
    assert torch.equal(model.cos_cached, emb.cos()) and torch.equal(model.sin_cached, emb.sin())
    assert sorted(dict(model.named_buffers())) == ["cos_cached", "sin_cached"]
    assert not any("cached" in key or "freq" in key for key in model.state_dict())
    folded = [n["name"] for n in compiled.summary["nodes"] if n.get("constant")]
    assert folded == ["exponents", "ratio", "scaled", "powers", "inv_freq", "t", "freqs", "emb", "cos_cached",
                      "sin_cached"]
    assert "arange(0, 4, 2" not in model.code and "self.cos_cached" in model.code  # read, never recomputed
    fresh = specc.build(GOOD / "rope_decoder.yaml", {"theta": 500.0})
    fresh.load_state_dict(model.state_dict(), strict=True)  # a checkpoint loads strictly, the tables stay
    assert not torch.equal(fresh.cos_cached, model.cos_cached)
    ejected = _eject(compiled, tmp_path)
    assert torch.equal(ejected.cos_cached, model.cos_cached) and "cos_cached" not in ejected.state_dict()


def test_a_persistent_buffer_is_not_folded_so_loaded_weights_count():
    text = """specc: 1
name: scaled
inputs: {x: [batch, 3]}
layers:
  - {name: gain, op: Buffer, shape: [3], init: ones}
  - {name: twice, op: mul, from: gain, other: 2.0}
  - {name: out, op: mul, from: [x, twice]}
"""
    compiled = specc.api.compiled(text)
    assert not any(n.get("constant") for n in compiled.summary["nodes"])
    model = compiled.module
    model.load_state_dict({"gain": torch.full((3,), 5.0)})
    assert torch.equal(model(torch.ones(1, 3)), torch.full((1, 3), 10.0))


FROZEN = """specc: 1
name: frozen
inputs: {x: [batch, 4]}
blocks:
  mlp:
    inputs: [h]
    layers:
      - {name: fc, op: Linear, out_features: 4}
      - {name: gain, op: Parameter, shape: [4], init: ones}
      - {op: mul, from: [fc, gain]}
layers:
  - {name: emb, op: Linear, from: x, out_features: 4}
  - {name: body, block: mlp, trainable: false}
  - name: head
    trainable: "${1 > 2}"
    seq:
      - {op: Linear, out_features: 4, tie: {weight: emb.weight}}
      - {op: Linear, out_features: 2}
  - {name: frozen_owner, op: Linear, out_features: 2, trainable: false}
  - {name: tied, op: Linear, out_features: 2, tie: {weight: frozen_owner.weight}}
"""


def test_trainable_false_freezes_a_node_group_or_block_and_ties_follow_their_owner(tmp_path):
    compiled = specc.api.compiled(FROZEN)
    grads = {n: p.requires_grad for n, p in compiled.module.named_parameters()}
    assert grads == {"emb.weight": True, "emb.bias": True, "body.gain": False, "body.fc.weight": False,
                     "body.fc.bias": False, "head.0.bias": False, "head.1.weight": False, "head.1.bias": False,
                     "frozen_owner.weight": False, "frozen_owner.bias": False, "tied.bias": True}
    assert getattr(compiled.module.head, "0").weight is compiled.module.emb.weight  # trainable: its owner is
    trainable = sum(p.numel() for p in compiled.module.parameters() if p.requires_grad)
    assert compiled.summary["trainable_parameters"] == trainable == 20 + 2
    assert compiled.summary["parameters"] == sum(p.numel() for p in compiled.module.parameters())
    ejected = _eject(compiled, tmp_path)
    assert {n: p.requires_grad for n, p in ejected.named_parameters()} == grads


def test_training_updates_only_trainable_parameters(tmp_path):
    spec = tmp_path / "frozen.yaml"
    spec.write_text(FROZEN + "train:\n  data: {inline: {a: [1, 2, 3, 4], b: [2, 1, 4, 3], c: [0, 1, 0, 1], "
                    "d: [1, 1, 0, 0], y: [3, 3, 7, 7], z: [1, 0, 1, 0]}, features: [a, b, c, d], target: [y, z]}\n"
                    "  loss: MSELoss\n  optimizer: {name: SGD, lr: 0.1}\n  epochs: 2\n  batch_size: 2\n")
    before = specc.build(spec).state_dict()
    result = specc.train(spec, progress=False, out=tmp_path / "run")
    after = load_file(result.run_dir / "model.safetensors")
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["emb.bias", "emb.weight", "head.0.weight", "tied.bias"]  # head.0.weight is emb.weight


def test_given_inits_fill_parameters_and_buffers_reshaped(tmp_path):
    text = """specc: 1
name: given
inputs: {x: [batch, 16, 2, 2]}
layers:
  - {name: conv, op: Conv2d, out_channels: 1, kernel_size: 1, bias: false, init: {weight: {arange: 16}}}
  - {name: table, op: Buffer, shape: [2, 3], init: {values: [[1, 2, 3], [4, 5, 6]]}}
  - {name: steps, op: Parameter, shape: [4], init: {arange: [0.0, 1.0, 0.25]}}
  - {name: ids, op: Buffer, shape: [3], dtype: int64, init: {arange: [2, 8, 2]}}
outputs: [conv, table, steps, ids]
"""
    compiled = specc.api.compiled(text)
    state = compiled.module.state_dict()
    assert torch.equal(state["conv.weight"], torch.arange(16, dtype=torch.float).view(1, 16, 1, 1))
    assert torch.equal(state["table"], torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    assert torch.equal(state["steps"], torch.tensor([0.0, 0.25, 0.5, 0.75]))
    assert torch.equal(state["ids"], torch.tensor([2, 4, 6]))
    ejected = _eject(compiled, tmp_path).state_dict()  # a fresh instance: its own init, not loaded weights
    assert all(torch.equal(ejected[k], v) for k, v in state.items())


def test_self_is_a_node_name_but_attributes_of_modules_are_refused():
    model = specc.build(GOOD / "rope_decoder.yaml")
    assert "attn.self.q_proj.weight" in model.state_dict()
    for name in ("forward", "half", "state_dict", "get_submodule", "T_destination"):
        text = f"specc: 1\nname: n\ninputs: {{x: [batch, 4]}}\nlayers:\n  - {{name: {name}, op: Linear, out_features: 2}}\n"
        with pytest.raises(specc.SpecError) as info:
            specc.load(text)
        assert [d.message for d in info.value.diagnostics] == [f"node name '{name}' is reserved by torch.nn.Module"]
    with pytest.raises(specc.SpecError) as info:
        specc.load("specc: 1\nname: n\ninputs: {self: [batch, 4]}\nlayers: [{op: Linear, out_features: 2}]\n")
    assert [d.message for d in info.value.diagnostics] == ["input name 'self' is reserved"]
