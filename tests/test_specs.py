"""Every shipped spec builds, and each article model matches its hand-written module exactly."""
import pytest
import torch

import handwritten as hw
import specc
from conftest import ROOT, SPEC_CASES, case_id


def _sizes(shape: str, sizes: dict[str, int]) -> list[int | None]:
    """'(batch, 16, 64)' with every symbolic dim at its size; None for a derived one ('height/8')."""
    dims = [d.strip() for d in shape.strip("()").split(",") if d.strip()]
    return [int(d) if d.isdigit() else sizes.get(d) for d in dims]


def _size(decl) -> int:
    """The smallest size from 3 that the dim's constraints allow (yolov8's height: a multiple of 32)."""
    return next(n for n in range(3, 10_000) if decl.allows(n))


@pytest.mark.parametrize("case", SPEC_CASES, ids=case_id)
def test_every_spec_builds_and_runs_with_the_shapes_it_reports(case):
    path, params = case
    compiled = specc.api.compiled(path, params)
    compiled.module.graph.lint()
    inputs = []
    sizes = {name: _size(decl) for name, decl in compiled.spec.dims.items()}
    for inp in compiled.spec.inputs.values():
        shape = [sizes[d] if isinstance(d, str) else d for d in inp.shape]
        lo, hi = inp.range or (0, 3)
        inputs.append(torch.randint(int(lo), int(min(hi, lo + 3)), shape) if inp.dtype.startswith("int")
                      else torch.randn(*shape))
    with torch.no_grad():
        out = compiled.module.eval()(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    expected = list(compiled.summary["outputs"].values())
    want = [_sizes(s, sizes) for s in expected]
    assert [[d if w is not None else None for d, w in zip(o.shape, ws)] for o, ws in zip(outs, want)] == want
    assert all(torch.isfinite(o).all() for o in outs)


def _renamed(spec_sd, renames):
    out = {}
    for k, v in spec_sd.items():
        for a, b in renames:
            k = k.replace(a, b)
        out[k] = v
    return out


CASES = {
    # spec file: (hand-written module, input, spec key -> hand-written key renames)
    "mlp2_zigzag": (lambda: hw.mlp_2_layers(1, 64, 1), (7, 1), [("linear.", "0."), ("out.", "2.")]),
    "mlp3_zigzag": (lambda: hw.mlp_3_layers(1, 64, 1), (7, 1),
                    [("linear_1.", "2."), ("linear.", "0."), ("out.", "4.")]),
    "resnet_block": (lambda: hw.ResNetClassifier(3, 16, 2, 4), (5, 3, 16, 16),
                     [("downsample.conv.", "downsample.0."), ("downsample.bn.", "downsample.1.")]),
    "attention_layer": (lambda: hw.AttentionLayer(32, 64), (3, 16, 32), []),
    "transformer_block": (lambda: hw.TransformerBlock(64, 128), (3, 16, 64),
                          [("ffn.fc1.", "ffn.0."), ("ffn.fc2.", "ffn.2.")]),
    "transformer_encoder": (lambda: hw.TransformerEncoder(4, 64, 128, 16, 10), (3, 16, 64),
                            [(".attn.q.", ".attention.query."), (".attn.k.", ".attention.key."),
                             (".attn.v.", ".attention.value."), (".ffn.", ".ffn.2."), (".linear.", ".ffn.0.")]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_article_model_matches_hand_written(name):
    make, in_shape, renames = CASES[name]
    ref = make().eval()
    model = specc.build(ROOT / "specs" / f"{name}.yaml").eval()
    n_ref = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_ref
    # same weights in, same numbers out: the spec computes what the article's code computes
    sd = _renamed(model.state_dict(), renames)
    assert sorted(sd) == sorted(ref.state_dict())
    model.load_state_dict({k: ref.state_dict()[_renamed({k: 0}, renames).popitem()[0]] for k in model.state_dict()})
    x = torch.randn(*in_shape)
    got, want = model(x), ref(x)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_transformer_encoder_parameter_count_is_the_articles():
    model = specc.build(ROOT / "specs/transformer_encoder.yaml")
    assert sum(p.numel() for p in model.parameters()) == 127_498


def test_linear_regression_matches_x_at_w_plus_b():
    ref = hw.LinearRegression()
    model = specc.build(ROOT / "specs/linear_regression.yaml")
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters()) == 3
    model.load_state_dict({"linear.weight": ref.W.detach().T.clone(), "linear.bias": ref.B.detach().clone()})
    x = torch.randn(5, 2)
    torch.testing.assert_close(model(x), ref(x))
