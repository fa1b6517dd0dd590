"""The zoo specs (specs/zoo/) against their references, at many settings of their params: torchvision's
ResNet, MobileNetV2 and VisionTransformer, and the nanoGPT-layout GPT (tests/refs/). Each setting must give
the same parameter count, the same state_dict keys, load the reference's weights strictly and compute the
same eval outputs. Then each zoo spec, at its ZOO_SMALL setting, goes through a run folder: ONNX export with
parity, eject to standalone Python, and `specc diff`."""
import importlib.util
import json
import re
import sys

import pytest
import torch
from safetensors.torch import load_file

import specc
from conftest import ZOO, ZOO_SMALL, invoke
from refs import hf_models, nanogpt
from refs import torchvision_models as tv
from refs import ultralytics_models

needs_tv = pytest.mark.skipif(not tv.available(), reason="torchvision (test-only dependency) not installed")
SPEC = {p.stem: p for p in ZOO}
TOL = dict(rtol=1e-5, atol=1e-5)
GPT_DEFAULTS = dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=True)
VIT_DEFAULTS = dict(image_size=224, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072,
                    num_classes=1000)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models run fastest on one thread, and a shared machine's other load cannot stall OpenMP's
    barriers (two threads on two busy cores made a 30 ms forward take 2 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def reference(stem, params):
    """The reference model for a zoo spec at `params` (the spec's defaults for what is not given)."""
    p = dict(params)
    if stem == "resnet":
        return tv.resnet(p.get("layers", [2, 2, 2, 2]), p.get("bottleneck", False), p.get("groups", 1),
                         p.get("width_per_group", 64), p.get("num_classes", 1000))
    if stem == "mobilenet_v2":
        return tv.mobilenet_v2(p.get("width_mult", 1.0), p.get("num_classes", 1000), p.get("dropout", 0.2))
    if stem == "vit":
        return tv.vit(**{**VIT_DEFAULTS, **p})
    if stem == "gpt":
        return nanogpt.GPT(nanogpt.GPTConfig(**{**GPT_DEFAULTS, **p}))
    if stem == "yolov8":
        return ultralytics_models.detection_model(p.get("scale", "n"), p.get("nc", 80))
    if stem in hf_models.CLASSES:  # the params are the config's names (tests/test_hf.py tests these specs)
        return hf_models.model(stem, p)
    raise AssertionError(stem)


def example(stem, params, batch=2):
    g = torch.Generator().manual_seed(1)
    if stem == "gpt":
        p = {**GPT_DEFAULTS, **params}
        return torch.randint(0, p["vocab_size"], (batch, p["block_size"]), generator=g)
    if stem in hf_models.CLASSES:
        ids = torch.randint(0, params["vocab_size"], (batch, 8), generator=g)
        return (ids, torch.ones_like(ids), torch.zeros_like(ids)) if stem == "bert" else ids
    if stem == "vit":
        size = params.get("image_size", 224)
        return torch.randn(batch, 3, size, size, generator=g)
    if stem == "yolov8":
        return torch.randn(batch, 3, 64, 96, generator=g)  # sizes divisible by 32
    return torch.randn(batch, 3, 40, 48, generator=g)  # odd sizes after the strides: 20, 10, 5, 3, 2


def scramble(model, seed=1):
    """Move every float tensor off its init (biases, class tokens and BN statistics are zeros or ones at
    init, which would hide two swapped keys); BN running variances stay positive."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    return model


def assert_equivalent(model, ref, *inputs):
    """Same parameter count and keys; the reference's weights load strictly; same eval outputs."""
    assert n_params(model) == n_params(ref)
    assert sorted(model.state_dict()) == sorted(ref.state_dict())
    ref.eval()
    model.eval()
    with torch.no_grad():
        before = [model(x) for x in inputs]
        model.load_state_dict(ref.state_dict(), strict=True)
        for x, b in zip(inputs, before):
            want, got = ref(x), model(x)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, **TOL)
            assert not torch.allclose(b, want, **TOL)  # the comparison is not vacuous: the weights matter


RESNETS = [
    pytest.param({}, id="resnet18-defaults"),
    pytest.param({"layers": [1, 1, 1, 1], "num_classes": 10}, id="shallow-1111"),
    pytest.param({"layers": [1, 2, 3, 1], "num_classes": 7}, id="basic-1231-7cls"),
    pytest.param({"layers": [1, 2, 1, 1], "bottleneck": True, "groups": 32, "width_per_group": 4, "num_classes": 10},
                 id="resnext-32x4d"),
    pytest.param({"layers": [1, 1, 1, 1], "bottleneck": True, "width_per_group": 128, "num_classes": 10},
                 id="wide-128"),
    pytest.param({"layers": [2, 1, 2, 1], "bottleneck": True, "groups": 8, "width_per_group": 16, "num_classes": 3},
                 id="bottleneck-8x16-3cls"),
]


@needs_tv
@pytest.mark.parametrize("params", RESNETS)
def test_resnet_matches_torchvision(params):
    torch.manual_seed(0)
    ref = scramble(reference("resnet", params))
    model = specc.build(SPEC["resnet"], params)
    assert_equivalent(model, ref, example("resnet", params), example("resnet", params, batch=1))


@needs_tv
def test_resnet50_from_api_and_cli_is_torchvisions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"layers": [3, 4, 6, 3], "bottleneck": True}
    torch.manual_seed(0)
    ref = scramble(tv.resnet([3, 4, 6, 3], bottleneck=True))
    model = specc.build(SPEC["resnet"], params)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    assert n_params(model) == 25_557_032
    x = torch.randn(1, 3, 32, 32)
    assert_equivalent(model, ref, x)

    r = invoke("build", SPEC["resnet"], "--set", "layers=[3,4,6,3]", "--set", "bottleneck=true", "--quiet",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "resnet"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parameters"] == 25_557_032
    assert summary["outputs"] == {"fc": "(batch, 1000)"}
    saved = load_file(str(run / "model.safetensors"))
    assert sorted(saved) == sorted(ref.state_dict())
    for k, v in saved.items():  # the CLI's run holds the same seeded initial weights as specc.build
        assert torch.equal(v, initial[k]), k
    # the run's weights load into torchvision's resnet50, and the run's model computes what it computes
    ref.load_state_dict(saved, strict=True)
    ran = specc.api.compiled_run(run).module.eval()
    with torch.no_grad():
        torch.testing.assert_close(ran(x), ref.eval()(x), **TOL)


MOBILENETS = [
    pytest.param({"width_mult": 1.0}, id="1.0-1000cls"),
    pytest.param({"width_mult": 0.75, "num_classes": 7}, id="0.75-7cls"),
    pytest.param({"width_mult": 0.35, "num_classes": 10}, id="0.35-10cls"),
    pytest.param({"width_mult": 1.4, "num_classes": 13}, id="1.4-13cls"),
    pytest.param({"width_mult": 0.5, "num_classes": 3, "dropout": 0.5}, id="0.5-3cls-dropout"),
]


@needs_tv
@pytest.mark.parametrize("params", MOBILENETS)
def test_mobilenet_v2_matches_torchvision(params):
    torch.manual_seed(0)
    ref = scramble(reference("mobilenet_v2", params))
    model = specc.build(SPEC["mobilenet_v2"], params)
    assert_equivalent(model, ref, example("mobilenet_v2", params), example("mobilenet_v2", params, batch=1))


VITS = [  # image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes
    (32, 8, 2, 2, 32, 64, 10),
    (48, 16, 1, 4, 64, 128, 5),
    (28, 7, 3, 1, 24, 48, 3),
    (40, 4, 2, 8, 64, 96, 1000),
    (64, 32, 4, 3, 48, 32, 2),
]


@needs_tv
@pytest.mark.parametrize("setting", VITS, ids=lambda s: "-".join(map(str, s)))
def test_vit_matches_torchvision(setting):
    params = dict(zip(["image_size", "patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim",
                       "num_classes"], setting))
    torch.manual_seed(0)
    ref = scramble(reference("vit", params))
    model = specc.build(SPEC["vit"], params)
    assert_equivalent(model, ref, example("vit", params), example("vit", params, batch=1))


GPTS = [
    pytest.param(dict(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=32, bias=True, dropout=0.0),
                 id="small-bias"),
    pytest.param(dict(vocab_size=50, block_size=16, n_layer=1, n_head=4, n_embd=64, bias=False, dropout=0.1),
                 id="nobias-dropout"),
    pytest.param(dict(vocab_size=101, block_size=8, n_layer=3, n_head=3, n_embd=48, bias=True, dropout=0.1),
                 id="3heads-dropout"),
    pytest.param(dict(vocab_size=13, block_size=64, n_layer=2, n_head=1, n_embd=16, bias=False, dropout=0.0),
                 id="1head-long"),
    pytest.param(dict(vocab_size=256, block_size=20, n_layer=4, n_head=8, n_embd=64, bias=True, dropout=0.0),
                 id="8heads"),
]


@pytest.mark.parametrize("params", GPTS)
def test_gpt_matches_nanogpt_at_every_length(params):
    torch.manual_seed(0)
    ref = scramble(reference("gpt", params))
    model = specc.build(SPEC["gpt"], params)
    idx = example("gpt", params)
    lengths = sorted({1, 5 if params["block_size"] > 5 else 2, params["block_size"]})  # time 1 .. block_size
    assert_equivalent(model, ref, *[idx[:, :t] for t in lengths])
    assert model.get_submodule("lm_head").weight is model.get_submodule("transformer.wte").weight  # still tied
    if params["dropout"] == 0:  # train mode computes the same too, gradients included (the tied one summed)
        model.train()
        ref.train()
        model(idx).square().mean().backward()
        ref(idx).square().mean().backward()
        grads = dict(model.named_parameters())
        for name, p in ref.named_parameters():
            torch.testing.assert_close(grads[name].grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_gpt_ties_lm_head_to_wte_and_counts_it_once():
    params = ZOO_SMALL["gpt"]
    c = specc.api.compiled(SPEC["gpt"], params)
    model = c.module
    wte = model.get_submodule("transformer.wte").weight
    assert model.get_submodule("lm_head").weight is wte
    state = model.state_dict()
    assert "lm_head.weight" in state and "transformer.wte.weight" in state
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    ref = reference("gpt", params)
    v, e = params["vocab_size"], params["n_embd"]
    assert n_params(model) == n_params(ref) == 29_600
    assert c.summary["parameters"] == n_params(ref)
    assert sum(t.numel() for t in state.values()) - v * e == c.summary["parameters"]  # state_dict counts it twice
    lm_head = next(n for n in c.summary["nodes"] if n["name"] == "lm_head")
    assert lm_head["parameters"] == 0  # its weight is wte's, counted there
    with torch.no_grad():  # one tensor: writing through one name changes the other
        wte[0, 0] = 123.0
    assert model.get_submodule("lm_head").weight[0, 0].item() == 123.0


def test_resnet_summary_shapes_name_the_right_dims():
    """batch and height must not be confused after ceil(/32) (sizes sampled close together once were)."""
    c = specc.api.compiled(SPEC["resnet"], ZOO_SMALL["resnet"])
    shapes = {n["name"]: n["shape"] for n in c.summary["nodes"]}
    assert shapes["layer3.0.out"] == "(batch, 256, ceil(height/16), ceil(width/16))"
    assert shapes["layer4.0.out"] == "(batch, 512, ceil(height/32), ceil(width/32))"


# ---- the zoo specs through a run folder: ONNX export with parity, eject, diff

VARIANTS = {  # a second setting of each spec, to diff the ZOO_SMALL run against
    "resnet": {"layers": [1, 2, 1, 1], "num_classes": 5},
    "mobilenet_v2": {"width_mult": 0.5, "num_classes": 10},
    "vit": {**ZOO_SMALL["vit"], "num_layers": 3, "image_size": 48},
    "gpt": {**ZOO_SMALL["gpt"], "n_layer": 3, "block_size": 64},
    "yolov8": {"scale": "n", "nc": 5},
    "gpt2": {**ZOO_SMALL["gpt2"], "n_layer": 3, "n_positions": 64},
    "llama": {**ZOO_SMALL["llama"], "num_hidden_layers": 3, "num_key_value_heads": 4},
    "qwen2": {**ZOO_SMALL["qwen2"], "num_hidden_layers": 1, "intermediate_size": 48},
    "bert": {**ZOO_SMALL["bert"], "num_hidden_layers": 3, "type_vocab_size": 3},
}


def expected_statuses(a_state, b_state):
    """Which of A's tensors load into B, computed from two reference state_dicts."""
    out = {}
    for k, v in a_state.items():
        if k not in b_state:
            out[k] = "skipped"
        elif b_state[k].shape != v.shape or b_state[k].dtype != v.dtype:
            out[k] = "mismatch"
        else:
            out[k] = "loads"
    out.update({k: "missing" for k in b_state if k not in a_state})
    return out


def import_file(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


def small_run(path, tmp_path):
    """The spec's run folder at its ZOO_SMALL setting (spec.yaml, summary.json, model.safetensors)."""
    return specc.api.build_run(path, ZOO_SMALL[path.stem], out=tmp_path / "run").run_dir


@needs_tv
@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_zoo_run_ejects_to_standalone_python(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stem, params = path.stem, ZOO_SMALL[path.stem]
    run = small_run(path, tmp_path)
    out = tmp_path / f"{stem}_ejected.py"
    r = invoke("build", run, "--emit-python", out, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert not re.search(r"^\s*(import|from) (specc|compiler|exporters)\b", text, re.M)  # standalone
    top = re.search(r"model = (\w+)\(\); model\.load_state_dict", text).group(1)
    ejected = getattr(import_file(out, f"ejected_{stem}"), top)()  # no arguments
    saved = load_file(str(run / "model.safetensors"))
    assert sorted(ejected.state_dict()) == sorted(saved) == sorted(reference(stem, params).state_dict())
    ejected.load_state_dict(saved, strict=True)
    built = specc.api.compiled_run(run).module.eval()
    x = example(stem, params)
    x = x if isinstance(x, tuple) else (x,)  # BERT takes three inputs
    with torch.no_grad():
        torch.testing.assert_close(ejected.eval()(*x), built(*x), **TOL)
    if stem == "gpt":
        assert ejected.get_submodule("lm_head").weight is ejected.get_submodule("transformer.wte").weight


@needs_tv
@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_zoo_run_diffs_against_another_setting(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stem, params, variant = path.stem, ZOO_SMALL[path.stem], VARIANTS[path.stem]
    run = small_run(path, tmp_path)
    result = specc.diff(run, path, None, variant)  # A is the run: its saved weights are what would load
    assert result["a"]["weights"] == str(run / "model.safetensors")
    want = expected_statuses(reference(stem, params).state_dict(), reference(stem, variant).state_dict())
    assert {t["tensor"]: t["status"] for t in result["tensors"]} == want
    assert result["parameters"] == {"a": n_params(reference(stem, params)), "b": n_params(reference(stem, variant))}
    assert "mismatch" in want.values() or "missing" in want.values()  # the variant really differs


@needs_tv
def test_diff_resnet18_to_resnet34():
    result = specc.diff(SPEC["resnet"], SPEC["resnet"], None, {"layers": [3, 4, 6, 3]})
    r18, r34 = tv.resnet([2, 2, 2, 2], False).state_dict(), tv.resnet([3, 4, 6, 3], False).state_dict()
    statuses = {t["tensor"]: t["status"] for t in result["tensors"]}
    assert statuses == expected_statuses(r18, r34)
    assert result["tensor_counts"] == {"loads": len(r18), "skipped": 0, "mismatch": 0, "missing": len(r34) - len(r18)}
    added = {".".join(n["node"].split(".")[:2]) for n in result["nodes"] if n["status"] == "added"}
    assert added == {"layer1.2", "layer2.2", "layer2.3", "layer3.2", "layer3.3", "layer3.4", "layer3.5", "layer4.2"}
    assert result["node_counts"]["removed"] == 0 and result["node_counts"]["changed"] == 0
    assert result["parameters"] == {"a": 11_689_512, "b": 21_797_672}
    # and to resnet50: every block's conv1 is 1x1 now, and the head reads 2048 features
    to50 = specc.diff(SPEC["resnet"], SPEC["resnet"], None, {"layers": [3, 4, 6, 3], "bottleneck": True})
    statuses = {t["tensor"]: t["status"] for t in to50["tensors"]}
    assert statuses == expected_statuses(r18, tv.resnet([3, 4, 6, 3], True).state_dict())
    assert statuses["fc.weight"] == "mismatch" and statuses["layer1.0.conv1.weight"] == "mismatch"
    assert statuses["conv1.weight"] == "loads" and statuses["layer1.0.conv3.weight"] == "missing"
