"""Blocks, repeat, tuple refs, overrides, shape inference and lowering, end to end."""
import textwrap

import pytest
import torch

import specc
from compiler.errors import SpecError
from conftest import ROOT


def spec(body: str) -> str:
    return textwrap.dedent(body).lstrip()


MULTI = spec("""
    specc: 1
    name: multi-io
    params: {dim: 8}
    inputs:
      a: [batch, $dim]
      b: [batch, $dim]
    blocks:
      pair:
        params: {width: null, scale: 2}
        inputs: [u, v]
        layers:
          - {name: su, op: Linear, from: u, out_features: $width}
          - {name: sv, op: Linear, from: v, out_features: $width}
          - {name: both, op: add, from: [su, sv]}
          - {name: scaled, op: mul, from: both, other: $scale}
        outputs: [scaled, sv]
    layers:
      - {name: p, block: pair, from: [a, b], width: 8, repeat: 3}
      - {name: joined, op: cat, from: [p.0, p.1], dim: -1}
      - {name: head, op: Linear, out_features: 3}
""")


def test_multi_input_multi_output_repeated_block():
    model = specc.build(MULTI)
    keys = list(model.state_dict())
    assert keys[:4] == ["p.0.su.weight", "p.0.su.bias", "p.0.sv.weight", "p.0.sv.bias"]
    assert "p.2.sv.bias" in keys
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    # the same computation by hand, with the model's own weights
    m = dict(model.named_modules())
    u, v = a, b
    for i in range(3):
        su, sv = m[f"p.{i}.su"](u), m[f"p.{i}.sv"](v)
        u, v = (su + sv) * 2, sv
    want = m["head"](torch.cat([u, v], -1))
    torch.testing.assert_close(model(a, b), want)
    model.graph.lint()


def test_code_reads_like_the_spec():
    code = specc.build(MULTI).code
    assert "def forward(self, a, b):" in code
    assert "p_0_su = getattr(self.p, \"0\").su(a)" in code
    assert "torch.cat([p_2_scaled, p_2_sv], dim = -1)" in code


def test_symbolic_dims_are_carried_by_name():
    compiled = specc.api.compiled(spec("""
        specc: 1
        name: sym
        inputs: {x: [batch, time, 4]}
        layers:
          - {name: gru, op: GRU, hidden_size: 6, batch_first: true}
          - {name: flat, op: flatten, from: gru.0, start_dim: 0, end_dim: 1}
          - {name: back, op: reshape, shape: [batch, time, 6]}
          - {name: padded, op: cat, from: [back, back], dim: 1}
    """))
    shapes = {n["name"]: n["shape"] for n in compiled.summary["nodes"]}
    assert shapes["gru"] == "(batch, time, 6), (1, batch, 6)"
    assert shapes["flat"] == "(?, 6)"  # batch*time: a product of two symbols has no single name
    assert shapes["back"] == "(batch, time, 6)"
    assert shapes["padded"] == "(batch, 2*time, 6)"
    out = compiled.module(torch.randn(3, 5, 4))
    assert out.shape == (3, 10, 6)


def test_rnn_and_attention_ops_lower_and_run():
    model = specc.build(spec("""
        specc: 1
        name: seq
        inputs: {x: [batch, time, 8]}
        layers:
          - {name: lstm, op: LSTM, hidden_size: 8, batch_first: true}
          - {name: attn, op: MultiheadAttention, from: lstm.0, num_heads: 2, batch_first: true}
          - {name: enc, op: TransformerEncoderLayer, from: attn.0, nhead: 2, dim_feedforward: 16, batch_first: true,
             dropout: 0.0}
          - {op: mean, dim: 1}
    """))
    assert model(torch.randn(2, 7, 8)).shape == (2, 8)


def test_embedding_with_integer_input():
    model = specc.build(spec("""
        specc: 1
        name: tokens
        inputs:
          ids: {shape: [batch, 12], dtype: int64, range: [0, 50]}
        layers:
          - {op: Embedding, num_embeddings: 50, embedding_dim: 8}
          - {op: flatten, start_dim: 1}
          - {op: Linear, out_features: 2}
    """))
    assert model(torch.randint(0, 50, (4, 12))).shape == (4, 2)


def test_params_overrides_by_name_and_dotted_path():
    path = ROOT / "specs/transformer_encoder.yaml"
    small = specc.load(path, ["depth=2", "embed=32", "train.optimizer.lr=0.01", "layers.2.out_features=3"])
    assert small.params["depth"] == 2 and small.params["embed"] == 32
    assert small.train.optimizer.kwargs["lr"] == 0.01
    model = specc.build(path, {"depth": 1, "classes": 5})
    assert model(torch.randn(2, 16, 64)).shape == (2, 5)
    assert not any(k.startswith("layers.1.") for k in model.state_dict())


@pytest.mark.parametrize("override,message,col", [
    ("dpeth=2", "unknown param 'dpeth'", 1),
    ("train.optimzer.lr=1", "unknown train key 'optimzer'", 1),
    ("layers.9.x=1", "'9' is not an index of layers", 1),
    ("depth", "cannot read override", 1),
    ("depth=!!python/name:os.system x", "YAML tags are not allowed", 7),
    ("depth=[1, 2", "invalid YAML", 12),
])
def test_bad_overrides(override, message, col):  # located at the --set they came from
    with pytest.raises(SpecError) as info:
        specc.load(ROOT / "specs/transformer_encoder.yaml", [override])
    d = info.value.diagnostics[0]
    assert d.file == "--set" and message in d.message and d.col == col, d.format()
    assert d.snippet == override


def test_override_value_errors_point_at_the_override():
    with pytest.raises(SpecError) as info:
        specc.build(ROOT / "specs/transformer_encoder.yaml", ["depth=abc"])
    d = info.value.diagnostics[0]
    assert (d.file, d.line, d.col) == ("--set", 1, 7)  # the value given, not the block line that uses it
    assert d.message == "repeat must be an integer ≥ 0, got 'abc'"
    assert d.hint == f"'depth' is used at {ROOT / 'specs/transformer_encoder.yaml'}:37:44; write repeat: 4 (0: no node)"


def test_size_guard_allocates_nothing(monkeypatch):
    import resource
    monkeypatch.setenv("SPECC_MAX_PARAM_BYTES", str(10**9))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SpecError, match=r"weights need 4.0 GB"):
        specc.build(spec("""
            specc: 1
            name: big
            inputs: {x: [batch, 100000]}
            layers: [{op: Linear, out_features: 10000, bias: false}]
        """))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KB: far below 4 GB


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = specc.build(ROOT / "specs/mlp2_zigzag.yaml").state_dict()
    b = specc.build(ROOT / "specs/mlp2_zigzag.yaml").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.get_rng_state(), state)


def test_dict_and_text_sources():
    d = {"specc": 1, "name": "d", "inputs": {"x": ["batch", 3]}, "layers": [{"op": "Linear", "out_features": 2}]}
    assert specc.build(d)(torch.randn(1, 3)).shape == (1, 2)
    d["layers"][0]["out_featurs"] = 2
    with pytest.raises(SpecError) as info:
        specc.build(d)
    assert info.value.diagnostics[0].file == "<dict>"


def test_errors_of_a_pass_come_together():
    with pytest.raises(SpecError) as info:
        specc.build(spec("""
            specc: 1
            name: many
            inputz: {x: [batch, 4]}
            inputs: {x: [batch, 4]}
            layers:
              - {op: Lineer}
              - {op: ReLU, inplace: 3}
              - {op: Linear, bais: true, out_features: 2}
        """))
    messages = [d.message for d in info.value.diagnostics]
    # the checking pass's errors, then resolve's (a value of the wrong type) from the same run
    assert messages == ["unknown top-level key 'inputz'", "unknown op 'Lineer'", "unknown argument 'bais' for Linear",
                        "argument 'inplace' of ReLU must be bool, got an integer 3"]
