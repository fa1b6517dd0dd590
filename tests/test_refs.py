"""The test-only reference models (tests/refs/) really are what later tests compare against:
torchvision's own classes (imported without torchvision's compiled ops) and a nanoGPT-layout GPT."""
import pytest
import torch

from refs import nanogpt
from refs import torchvision_models as tv

needs_tv = pytest.mark.skipif(not tv.available(), reason="torchvision (test-only dependency) not installed")
IMG = (1, 3, 64, 64)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@needs_tv
def test_torchvision_classes_are_torchvisions_own():
    m = tv.resnet([2, 2, 2, 2], bottleneck=False)
    assert type(m).__module__ == "torchvision.models.resnet"
    assert type(m.layer1[0]).__name__ == "BasicBlock"
    assert type(tv.resnet([3, 4, 6, 3], bottleneck=True).layer1[0]).__name__ == "Bottleneck"
    assert type(tv.mobilenet_v2()).__module__ == "torchvision.models.mobilenetv2"
    v = tv.vit(64, 16, 1, 2, 32, 64, num_classes=10)
    assert type(v).__module__ == "torchvision.models.vision_transformer"
    assert all(type(x).__module__.startswith(("torchvision.", "torch.")) for x in v.modules())


@needs_tv
@pytest.mark.parametrize("name, args, expected", [
    ("resnet18", ([2, 2, 2, 2], False), 11_689_512),
    ("resnet50", ([3, 4, 6, 3], True), 25_557_032),
    ("resnext50_32x4d", ([3, 4, 6, 3], True, 32, 4), 25_028_904),
])
def test_resnet_param_counts_and_forward(name, args, expected):
    m = tv.resnet(*args, num_classes=1000).eval()
    assert n_params(m) == expected, name
    with torch.no_grad():
        assert m(torch.randn(IMG)).shape == (1, 1000)


@needs_tv
def test_mobilenet_v2_param_count_and_forward():
    m = tv.mobilenet_v2(width_mult=1.0, num_classes=1000).eval()
    assert n_params(m) == 3_504_872
    small = tv.mobilenet_v2(width_mult=0.75, num_classes=10, dropout=0.0).eval()
    with torch.no_grad():
        assert m(torch.randn(IMG)).shape == (1, 1000)
        assert small(torch.randn(IMG)).shape == (1, 10)


@needs_tv
def test_small_vit_forward():
    m = tv.vit(image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
               num_classes=10).eval()
    assert m.seq_length == (64 // 16) ** 2 + 1  # patches + class token
    with torch.no_grad():
        y = m(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def _gpt(bias=True, n_layer=2):
    torch.manual_seed(0)
    cfg = nanogpt.GPTConfig(vocab_size=97, block_size=16, n_layer=n_layer, n_head=4, n_embd=32,
                            dropout=0.0, bias=bias)
    return nanogpt.GPT(cfg).eval()


@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_state_dict_keys(bias):
    m = _gpt(bias=bias)
    subs = ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
    suffixes = ["weight", "bias"] if bias else ["weight"]
    expected = ["transformer.wte.weight", "transformer.wpe.weight"]
    expected += [f"transformer.h.{i}.{s}.{p}" for i in range(2) for s in subs for p in suffixes]
    expected += [f"transformer.ln_f.{p}" for p in suffixes] + ["lm_head.weight"]
    assert list(m.state_dict()) == expected


def test_nanogpt_tied_weights_counted_once():
    m = _gpt()
    assert m.lm_head.weight is m.transformer.wte.weight
    e, v, t, L = 32, 97, 16, 2
    block = 2 * 2 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * 4 * e + 4 * e) + (4 * e * e + e)
    expected = v * e + t * e + L * block + 2 * e  # wte (= lm_head) once, wpe, blocks, ln_f
    assert n_params(m) == expected
    assert m.get_num_params() == expected - t * e


def test_nanogpt_init_and_output_shape():
    m = _gpt()
    std = m.transformer.h[0].attn.c_proj.weight.std().item()
    assert std < m.transformer.h[0].mlp.c_fc.weight.std().item()  # scaled residual-projection init
    assert torch.count_nonzero(m.transformer.h[0].attn.c_attn.bias) == 0
    idx = torch.randint(0, 97, (3, 10))
    with torch.no_grad():
        logits = m(idx)
        assert logits.shape == (3, 10, 97)  # every position, not only the last
        # causal: logits at positions 0..4 do not depend on tokens 5..9
        idx2 = idx.clone()
        idx2[:, 5:] = (idx2[:, 5:] + 1) % 97
        assert torch.allclose(m(idx2)[:, :5], logits[:, :5], atol=1e-6)
