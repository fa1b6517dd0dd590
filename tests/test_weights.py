"""Weight import end to end (`specc build SPEC --weights FILE [--weights-map RULE]`, `specc.build(...,
weights=FILE)`): torchvision's and nanoGPT's weights in torch.save and safetensors files, renamed keys,
tied weights, and every bad input refused with exit 2, `FILE: error: ...` and a hint, without running
anything from the file."""
import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import specc
from conftest import ZOO_SMALL, ROOT, invoke
from refs import nanogpt
from refs import torchvision_models as tv

needs_tv = pytest.mark.skipif(not tv.available(), reason="torchvision (test-only dependency) not installed")
RESNET, GPT = ROOT / "specs/zoo/resnet.yaml", ROOT / "specs/zoo/gpt.yaml"
SMALL = ZOO_SMALL["resnet"]  # layers [1, 1, 1, 1], 10 classes
SETS = ["--set", "layers=[1,1,1,1]", "--set", "num_classes=10"]
GPT_P = ZOO_SMALL["gpt"]
GPT_SETS = [a for k, v in GPT_P.items() for a in ("--set", f"{k}={v}")]
TOL = dict(rtol=1e-5, atol=1e-5)
X = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
IDX = torch.randint(0, GPT_P["vocab_size"], (2, GPT_P["block_size"]), generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models run fastest on one thread, and other load on a shared machine cannot stall OpenMP."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def scrambled(model, seed=1):
    """Weights far from any init (BN statistics and biases included), so a wrong or skipped key shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def resnet_ref():
    torch.manual_seed(0)
    return scrambled(tv.resnet([1, 1, 1, 1], bottleneck=False, num_classes=10))


@pytest.fixture(scope="module")
def gpt_ref():
    torch.manual_seed(0)
    return scrambled(nanogpt.GPT(nanogpt.GPTConfig(**GPT_P)))


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def assert_holds(state, ref_state):
    assert sorted(state) == sorted(ref_state)
    for k, v in ref_state.items():
        assert torch.equal(state[k], v), k


def assert_refused(r, file, *texts, hint):
    """Exit 2, `FILE: error: TEXT` for each text, a hint, and no traceback or crash report."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    for text in texts:
        assert f"{file}: error: {text}" in r.stderr, r.stderr
    assert f"hint: {hint}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout and "internal error" not in r.stderr


# ---- torchvision's resnet, saved both ways


@needs_tv
@pytest.mark.parametrize("name", ["resnet.pth", "resnet.safetensors", "resnet-safetensors.bin"])
def test_torchvision_weights_import_from_cli_and_api(name, resnet_ref, tmp_path):
    path = tmp_path / name
    state = resnet_ref.state_dict()
    if "safetensors" in name:
        save_file(dict(state), str(path))  # .bin: found by its header, not its name
    else:
        torch.save(state, path)
    want = outputs(resnet_ref, X)

    r = invoke("build", RESNET, *SETS, "--weights", name, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "resnet"
    assert_holds(load_file(str(run / "model.safetensors")), state)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["weights"] == {"imported": name, "map": []}
    torch.testing.assert_close(outputs(specc.api.compiled_run(run).module, X), want, **TOL)

    model = specc.build(RESNET, SMALL, weights=path)
    assert_holds(model.state_dict(), state)
    torch.testing.assert_close(outputs(model, X), want, **TOL)
    assert not torch.allclose(outputs(specc.build(RESNET, SMALL), X), want, **TOL)  # the import is what did it


@needs_tv
def test_imported_run_exports_to_onnx_with_parity(resnet_ref, tmp_path):
    torch.save(resnet_ref.state_dict(), tmp_path / "resnet.pth")
    assert invoke("build", RESNET, *SETS, "--weights", "resnet.pth", "--quiet", cwd=tmp_path).returncode == 0
    run = tmp_path / "runs" / "resnet"
    r = invoke("export", run, "--onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "parity passed" in r.stdout
    parity = json.loads((run / "export" / "parity.json").read_text())
    assert parity["passed"] is True and len(parity["checks"]) >= 2
    assert all(c["passed"] for c in parity["checks"])
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(str(run / "export" / "model.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    fc = resnet_ref.state_dict()["fc.weight"].numpy()
    assert any(v.shape == fc.shape and (v == fc).all() for v in inits.values())  # the imported weights, not init


# ---- keys that carry a prefix


@needs_tv
def test_model_prefix_loads_with_a_map_and_fails_without(resnet_ref, tmp_path):
    state = resnet_ref.state_dict()
    torch.save({f"model.{k}": v for k, v in state.items()}, tmp_path / "prefixed.pth")
    want = outputs(resnet_ref, X)
    n = len(state)

    r = invoke("build", RESNET, *SETS, "--weights", "prefixed.pth", cwd=tmp_path)
    assert_refused(r, "prefixed.pth", f"weights do not fit the model: missing {n} key(s): bn1.bias, ",
                   f"weights do not fit the model: unexpected {n} key(s): model.bn1.bias, ",
                   hint="the file's keys carry a prefix: try --weights-map model.")
    assert f"and {n - 8} more" in r.stderr  # eight keys listed, then a count
    assert not (tmp_path / "runs").exists()  # nothing was written

    for rule in ("model.", r"^model\.(.*)=\1"):
        r = invoke("build", RESNET, *SETS, "--weights", "prefixed.pth", "--weights-map", rule, "--quiet", "--force",
                   cwd=tmp_path)
        assert r.returncode == 0, (rule, r.stderr)
        run = tmp_path / "runs" / "resnet"
        assert_holds(load_file(str(run / "model.safetensors")), state)
        assert json.loads((run / "summary.json").read_text())["weights"]["map"] == [rule]
        torch.testing.assert_close(outputs(specc.api.compiled_run(run).module, X), want, **TOL)
    model = specc.build(RESNET, SMALL, weights=tmp_path / "prefixed.pth", weights_map=["model."])
    torch.testing.assert_close(outputs(model, X), want, **TOL)


@needs_tv
def test_ddp_module_prefix_in_safetensors(resnet_ref, tmp_path):
    state = resnet_ref.state_dict()
    save_file({f"module.{k}": v for k, v in state.items()}, str(tmp_path / "ddp.safetensors"))
    r = invoke("build", RESNET, *SETS, "--weights", "ddp.safetensors", cwd=tmp_path)
    assert_refused(r, "ddp.safetensors", f"weights do not fit the model: unexpected {len(state)} key(s): module.bn1.bias",
                   hint="the file's keys carry a prefix: try --weights-map module.")
    for rule in ("module.", r"^module\.="):
        model = specc.build(RESNET, SMALL, weights=tmp_path / "ddp.safetensors", weights_map=[rule])
        assert_holds(model.state_dict(), state)
    # a rule that matches nothing is a typo, said as such (issue 20)
    with pytest.raises(specc.SpecError, match="rule 'model.' matches no key of the file") as info:
        specc.build(RESNET, SMALL, weights=tmp_path / "ddp.safetensors", weights_map=["model."])
    assert info.value.diagnostics[0].hint.startswith("the keys (after the rules before it) are: module.bn1.bias")


def nanogpt_ckpt(state):
    """The shape of nanoGPT's ckpt.pt: a torch.compile'd model's state_dict (`_orig_mod.` keys) under
    'model', next to the optimizer's state, ints, floats, strings and a tensor."""
    return {"model": {f"_orig_mod.{k}": v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 6e-4, "betas": (0.9, 0.95), "params": [0, 1, 2]}]},
            "model_args": dict(GPT_P), "iter_num": 5000, "best_val_loss": torch.tensor(1.4697),
            "config": {"dataset": "shakespeare_char", "compile": True, "out_dir": "out-shakespeare-char"}}


def test_nanogpt_checkpoint_loads_with_a_map_and_fails_without(gpt_ref, tmp_path):
    state = gpt_ref.state_dict()
    torch.save(nanogpt_ckpt(state), tmp_path / "ckpt.pt")
    want = outputs(gpt_ref, IDX)

    r = invoke("build", GPT, *GPT_SETS, "--weights", "ckpt.pt", cwd=tmp_path)
    assert_refused(r, "ckpt.pt", "weights do not fit the model: unexpected ",
                   "weights do not fit the model: missing ", hint="the file's keys carry a prefix: try --weights-map _orig_mod.")
    assert "_orig_mod.transformer.h.0.attn.c_attn.bias" in r.stderr and " transformer.h.0.attn.c_attn.bias" in r.stderr

    r = invoke("build", GPT, *GPT_SETS, "--weights", "ckpt.pt", "--weights-map", r"^_orig_mod\.(.+)=\1", "--quiet",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "gpt"
    assert_holds(load_file(str(run / "model.safetensors")), state)
    torch.testing.assert_close(outputs(specc.api.compiled_run(run).module, IDX), want, **TOL)

    model = specc.build(GPT, GPT_P, weights=tmp_path / "ckpt.pt", weights_map=["_orig_mod."])
    torch.testing.assert_close(outputs(model, IDX), want, **TOL)
    assert model.get_submodule("lm_head").weight is model.get_submodule("transformer.wte").weight


# ---- tied weights


@pytest.mark.parametrize("keep", ["both", "transformer.wte.weight", "lm_head.weight"])
def test_tied_weights_load_from_either_key(keep, gpt_ref, tmp_path):
    state = dict(gpt_ref.state_dict())
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()  # nanoGPT ties them
    if keep != "both":
        del state["lm_head.weight" if keep == "transformer.wte.weight" else "transformer.wte.weight"]
    torch.save(state, tmp_path / "gpt.pt")
    model = specc.build(GPT, GPT_P, weights=tmp_path / "gpt.pt")
    lm_head, wte = model.get_submodule("lm_head").weight, model.get_submodule("transformer.wte").weight
    assert lm_head is wte
    assert torch.equal(wte, gpt_ref.transformer.wte.weight)
    torch.testing.assert_close(outputs(model, IDX), outputs(gpt_ref, IDX), **TOL)

    r = invoke("build", GPT, *GPT_SETS, "--weights", "gpt.pt", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    saved = load_file(str(tmp_path / "runs" / "gpt" / "model.safetensors"))
    assert_holds(saved, gpt_ref.state_dict())  # both keys on disk, equal
    assert json.loads((tmp_path / "runs" / "gpt" / "summary.json").read_text())["parameters"] == \
        sum(p.numel() for p in gpt_ref.parameters())


def test_tied_keys_that_disagree_are_refused(gpt_ref, tmp_path):
    state = {k: v.clone() for k, v in gpt_ref.state_dict().items()}
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0  # an untied model's weights
    torch.save(state, tmp_path / "untied.pt")
    with pytest.raises(specc.SpecError, match="lm_head.weight"):
        specc.build(GPT, GPT_P, weights=tmp_path / "untied.pt")


# ---- bad input: exit 2, `FILE: error: ...`, a hint, never a traceback, no run folder


def _state(ref, **changes):
    state = dict(ref.state_dict())
    for k, v in changes.items():
        k = k.replace("__", ".")
        if v is None:
            del state[k]
        else:
            state[k] = v
    return state


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


READ_HINT = "pass a .safetensors file or a torch.save'd state_dict"
SAFE_HINT = "specc loads torch files with weights_only=True and never unpickles code"
FIT_HINT = "check that the file belongs to this spec and these params (specc diff shows what differs)"


def _write_bad(kind, ref, d):
    """Write the bad input `kind` into folder d; returns (the --weights argument, expected texts, hint)."""
    fit = "weights do not fit the model: "
    if kind == "missing":
        torch.save(_state(ref, fc__bias=None), d / "w.pth")
        return "w.pth", [fit + "missing 1 key(s): fc.bias\n"], FIT_HINT
    if kind == "unexpected":
        torch.save(_state(ref, extra__weight=torch.zeros(3)), d / "w.pth")
        return "w.pth", [fit + "unexpected 1 key(s): extra.weight\n"], FIT_HINT
    if kind == "shape":
        torch.save(_state(ref, fc__weight=torch.zeros(5, 512)), d / "w.pth")
        return "w.pth", [fit + "'fc.weight' is (5, 512) float32 in the file but (10, 512) float32 in the model"], FIT_HINT
    if kind == "dtype":
        save_file(_state(ref, conv1__weight=ref.conv1.weight.detach().double()), str(d / "w.safetensors"))
        return "w.safetensors", [fit + "'conv1.weight' is (64, 3, 7, 7) float64 in the file but (64, 3, 7, 7) float32 "
                                 "in the model"], FIT_HINT
    if kind == "all-at-once":
        torch.save(_state(ref, fc__bias=None, extra__weight=torch.zeros(3), fc__weight=torch.zeros(5, 512),
                          conv1__weight=ref.conv1.weight.detach().half()), d / "w.pth")
        return "w.pth", [fit + "missing 1 key(s): fc.bias", fit + "unexpected 1 key(s): extra.weight",
                         fit + "'fc.weight' is (5, 512) float32", fit + "'conv1.weight' is (64, 3, 7, 7) float16"], FIT_HINT
    if kind == "pickled-code":  # torch.save's zip format around a pickle that calls exec
        torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(d / "MARKER")}, d / "w.pth")
        return "w.pth", ["not a state_dict specc can read safely: WeightsUnpickler error: Unsupported global: "
                         "GLOBAL exec was not an allowed global"], SAFE_HINT
    if kind == "pickled-code-raw":  # a bare pickle (protocol 2), the legacy torch format
        (d / "w.pkl").write_bytes(pickle.dumps({"payload": _Payload(d / "MARKER")}, protocol=2))
        return "w.pkl", ["not a state_dict specc can read safely: WeightsUnpickler error: Unsupported global: "
                         "GLOBAL exec was not an allowed global"], SAFE_HINT
    if kind == "pickled-code-protocol-4":  # pickle's default protocol, which torch's safe unpickler does not speak
        (d / "w.pkl").write_bytes(pickle.dumps({"payload": _Payload(d / "MARKER")}, protocol=4))
        return "w.pkl", ["not a state_dict specc can read safely: Unsupported operand"], SAFE_HINT
    if kind == "not-a-state-dict":
        torch.save({"iter_num": 5, "config": {"lr": 0.1}}, d / "w.pth")
        return "w.pth", ["the file holds no state_dict (a mapping of names to tensors)"], \
            "save model.state_dict(); a checkpoint may nest it under 'model' or 'state_dict'"
    if kind == "truncated":
        torch.save(ref.state_dict(), d / "full.pth")
        data = (d / "full.pth").read_bytes()
        (d / "w.pth").write_bytes(data[: len(data) // 2])
        return "w.pth", ["not a state_dict specc can read safely: PytorchStreamReader failed reading zip archive"], SAFE_HINT
    if kind == "truncated-safetensors":
        save_file(dict(ref.state_dict()), str(d / "full.safetensors"))
        data = (d / "full.safetensors").read_bytes()
        (d / "w.safetensors").write_bytes(data[: len(data) // 2])
        return "w.safetensors", ["not a readable weight file: Error while deserializing"], READ_HINT
    if kind == "empty":
        (d / "w.pth").write_bytes(b"")
        return "w.pth", ["weight file is empty\n"], READ_HINT
    if kind == "empty-safetensors":
        (d / "w.safetensors").write_bytes(b"")
        return "w.safetensors", ["weight file is empty\n"], READ_HINT
    if kind == "nonexistent":
        return "nope.pth", ["weight file does not exist\n"], READ_HINT
    if kind == "directory":
        (d / "weights").mkdir()
        return "weights", ["not a Hugging Face folder: it has no config.json\n"], (
            "pass a folder written by save_pretrained (config.json and model.safetensors), or a weight file")
    raise AssertionError(kind)


BAD = ["missing", "unexpected", "shape", "dtype", "all-at-once", "pickled-code", "pickled-code-raw",
       "pickled-code-protocol-4", "not-a-state-dict",
       "truncated", "truncated-safetensors", "empty", "empty-safetensors", "nonexistent", "directory"]


@needs_tv
@pytest.mark.parametrize("kind", BAD)
def test_bad_weight_files_exit_2_with_the_file_and_a_hint(kind, resnet_ref, tmp_path):
    arg, texts, hint = _write_bad(kind, resnet_ref, tmp_path)
    r = invoke("build", RESNET, *SETS, "--weights", arg, cwd=tmp_path)
    assert_refused(r, arg, *texts, hint=hint)
    assert not (tmp_path / "MARKER").exists()  # nothing in the file ran
    assert not (tmp_path / "runs").exists()  # and no run folder was written
    with pytest.raises(specc.SpecError) as e:  # the API refuses it the same way
        specc.build(RESNET, SMALL, weights=tmp_path / arg)
    assert texts[0].strip() in str(e.value)
    assert not (tmp_path / "MARKER").exists()


@needs_tv
def test_an_empty_file_is_called_empty(resnet_ref, tmp_path):
    (tmp_path / "w.pth").write_bytes(b"")
    r = invoke("build", RESNET, *SETS, "--weights", "w.pth", cwd=tmp_path)
    assert r.returncode == 2
    assert "empty" in r.stderr.splitlines()[0]


def test_the_payload_would_have_run(tmp_path):
    """The pickled-code files above really carry code: plain pickle.loads creates the marker."""
    pickle.loads(pickle.dumps(_Payload(tmp_path / "MARKER"), protocol=2))
    assert (tmp_path / "MARKER").exists()


def test_bad_weights_map_rules_exit_2(tmp_path):
    torch.save({"x": torch.zeros(1)}, tmp_path / "w.pth")
    r = invoke("build", RESNET, *SETS, "--weights", "w.pth", "--weights-map", "(model=", cwd=tmp_path)
    assert_refused(r, "--weights-map", "bad rule '(model=': missing ), unterminated subpattern at position 0",
                   hint="write PREFIX, or REGEX=REPLACEMENT such as '^module\\.(.*)=\\1'")
    r = invoke("build", RESNET, *SETS, "--weights-map", "model.", cwd=tmp_path)
    assert_refused(r, "--weights-map", "--weights-map renames the keys of --weights", hint="add --weights FILE")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(specc.SpecError, match="--weights-map renames the keys of --weights"):
        specc.build(RESNET, SMALL, weights_map=["model."])
