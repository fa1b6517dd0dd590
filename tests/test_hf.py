"""Hugging Face folders as weights (`specc build SPEC --weights DIR`) and the LLM zoo specs against
transformers (a pinned, test-only reference: tests/refs/hf_models.py). Each zoo spec, at three or more
config settings: the folder's config.json gives the params, the parameter count and the keys are the
reference's, the save_pretrained folder (sharded or not) loads strictly, and eval outputs agree to 1e-5.
Then the bad folders: each is exit 2 with the file, the problem and a hint."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import specc
from conftest import ROOT, ZOO_SMALL, invoke
from refs import hf_models

pytestmark = [pytest.mark.skipif(not hf_models.available(), reason="transformers (test-only dependency) not installed"),
              pytest.mark.usefixtures("one_thread")]
SPEC = {stem: ROOT / "specs/zoo" / f"{stem}.yaml" for stem in hf_models.CLASSES}
TOL = dict(rtol=1e-5, atol=1e-5)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def inputs_for(stem, config, batch=2, time=None):
    """input_ids (and BERT's attention_mask with padding, token_type_ids) for a config."""
    g = torch.Generator().manual_seed(3)
    longest = config.get("n_positions", config.get("max_position_embeddings", 16))
    time = time or min(longest, 12)
    ids = torch.randint(0, config["vocab_size"], (batch, time), generator=g)
    if stem != "bert":
        return {"input_ids": ids}
    mask = torch.ones(batch, time, dtype=torch.int64)
    mask[0, max(1, time - 3):] = 0  # the first row is padded (its first token stays)
    types = torch.zeros(batch, time, dtype=torch.int64)
    types[:, time // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def outputs_of(stem, ref_out):
    if stem == "bert":
        return ref_out.last_hidden_state, ref_out.pooler_output
    return ref_out.logits


def assert_matches(stem, config, tmp_path, shard=None):
    """The folder loads strictly into the spec built from its config.json, and computes what
    transformers computes; returns the folder."""
    ref = hf_models.model(stem, config)
    folder = hf_models.save(ref, tmp_path / f"{stem}-folder", shard)
    if shard:
        assert (folder / "model.safetensors.index.json").is_file()
    model = specc.build(SPEC[stem], weights=folder).eval()
    assert n_params(model) == n_params(ref)
    assert sorted(model.state_dict()) == sorted(ref.state_dict())
    fresh = specc.build(SPEC[stem], config_params(stem, folder))  # the same model from the params alone
    assert sorted(fresh.state_dict()) == sorted(ref.state_dict()) and n_params(fresh) == n_params(ref)
    for time in sorted({1, 5, inputs_for(stem, config)["input_ids"].shape[1]}):
        x = inputs_for(stem, config, time=time)
        with torch.no_grad():
            got, want = model(**x), outputs_of(stem, ref(**x))
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, **TOL)
    return folder


def config_params(stem, folder):
    """The spec's params from the folder, as the import maps them (specc.hf)."""
    from compiler.hf_section import read_hf
    from compiler.pipeline import read_tree
    from specc import hf
    return hf.params_for(hf.open_folder(folder), read_hf(read_tree(SPEC[stem]).get("hf")), str(SPEC[stem]))


GPT2S = [
    pytest.param(dict(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2), "20KB", id="sharded"),
    pytest.param(dict(vocab_size=64, n_positions=16, n_embd=48, n_layer=1, n_head=4, n_inner=80,
                      layer_norm_epsilon=1e-6), None, id="n_inner-eps"),
    pytest.param(dict(vocab_size=50, n_positions=24, n_embd=64, n_layer=3, n_head=8), None, id="8heads-3layers"),
]


@pytest.mark.parametrize("config,shard", GPT2S)
def test_gpt2_matches_transformers(config, shard, tmp_path):
    assert_matches("gpt2", config, tmp_path, shard)


def test_gpt2_folder_through_the_cli_with_set_after_the_config(tmp_path):
    ref = hf_models.model("gpt2", dict(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    folder = hf_models.save(ref, tmp_path / "gpt2", "20KB")
    assert "lm_head.weight" not in json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    r = invoke("build", SPEC["gpt2"], "--weights", folder, "--set", "embd_pdrop=0.0", "--out", tmp_path / "run", "-q",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    params = specc.load(run).params
    assert (params["n_embd"], params["n_positions"], params["vocab_size"]) == (32, 32, 100)  # from config.json
    assert params["embd_pdrop"] == 0.0 and params["attn_pdrop"] == 0.1  # --set after the config's 0.1
    saved = load_file(str(run / "model.safetensors"))
    want = ref.state_dict()
    assert sorted(saved) == sorted(want)  # the tied lm_head.weight, which the folder leaves out, is written
    for k, v in want.items():
        assert torch.equal(saved[k], v), k
    summary = json.loads((run / "summary.json").read_text())
    assert summary["weights"] == {"imported": str(folder), "map": [], "format": "huggingface"}
    model = specc.api.compiled_run(run).module
    assert model.get_submodule("lm_head").weight is model.get_submodule("transformer.wte").weight  # tied again


def test_folder_of_pytorch_model_bin(tmp_path):
    """Older folders hold pytorch_model.bin (a torch.save'd state_dict, read with weights_only)."""
    ref = hf_models.model("gpt2", dict(vocab_size=100, n_positions=32, n_embd=32, n_layer=1, n_head=2))
    folder = hf_models.save(ref, tmp_path / "gpt2")
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    model = specc.build(SPEC["gpt2"], weights=folder).eval()
    x = inputs_for("gpt2", {"vocab_size": 100, "n_positions": 32})
    with torch.no_grad():
        torch.testing.assert_close(model(**x), ref(**x).logits, **TOL)


def test_imported_model_is_the_files_tensors_and_still_tied(tmp_path):
    """Assigned from the memory-mapped file (nothing copied), the tie made again, and trainable."""
    ref = hf_models.model("gpt2", dict(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    folder = hf_models.save(ref, tmp_path / "gpt2")
    model = specc.build(SPEC["gpt2"], weights=folder)
    assert model.get_submodule("lm_head").weight is model.get_submodule("transformer.wte").weight
    assert n_params(model) == n_params(ref)
    assert all(p.requires_grad and p.device.type == "cpu" for p in model.parameters())
    model(torch.zeros(1, 4, dtype=torch.int64)).sum().backward()  # gradients flow into the mapped tensors
    assert model.get_submodule("transformer.wte").weight.grad is not None


LLAMAS = [
    pytest.param(dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False), "20KB",
                 id="gqa-untied-sharded"),
    pytest.param(dict(vocab_size=90, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=1, head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-5,
                      tie_word_embeddings=True,
                      rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0, original_max_position_embeddings=16)), None,
                 id="llama3.1-rope-tied-head_dim16-mqa"),
    pytest.param(dict(vocab_size=64, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
                      num_key_value_heads=6, max_position_embeddings=32, attention_bias=True, mlp_bias=True,
                      rope_parameters=dict(rope_type="default", rope_theta=1000.0)), None, id="mha-biases-theta1000"),
]
QWENS = [
    pytest.param(dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False), "20KB",
                 id="gqa-untied-sharded"),
    pytest.param(dict(vocab_size=90, hidden_size=48, intermediate_size=40, num_hidden_layers=1, num_attention_heads=6,
                      num_key_value_heads=1, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=True),
                 None, id="mqa-tied"),
    pytest.param(dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=32,
                      rope_parameters=dict(rope_type="default", rope_theta=1e6)), None, id="mha-theta1e6"),
]
BERTS = [
    pytest.param(dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=64), "20KB", id="sharded"),
    pytest.param(dict(vocab_size=80, hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=40,
                      max_position_embeddings=32, type_vocab_size=3, layer_norm_eps=1e-6), None, id="3types-eps"),
    pytest.param(dict(vocab_size=50, hidden_size=64, num_hidden_layers=3, num_attention_heads=8, intermediate_size=96,
                      max_position_embeddings=16, pad_token_id=1), None, id="8heads-3layers"),
]


@pytest.mark.parametrize("config,shard", LLAMAS)
def test_llama_matches_transformers(config, shard, tmp_path):
    assert_matches("llama", config, tmp_path, shard)


@pytest.mark.parametrize("config,shard", QWENS)
def test_qwen2_matches_transformers(config, shard, tmp_path):
    assert_matches("qwen2", config, tmp_path, shard)


@pytest.mark.parametrize("config,shard", BERTS)
def test_bert_matches_transformers_with_padding(config, shard, tmp_path):
    assert_matches("bert", config, tmp_path, shard)


def test_bert_row_of_only_padding_is_transformers_eager_attention(tmp_path):
    """A row with no token at all: the additive mask attends uniformly, as BertModel's eager attention
    does (its SDPA path treats such a row otherwise); the other rows are unaffected."""
    config = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=64)
    ref = hf_models.model("bert", config)
    model = specc.build(SPEC["bert"], weights=hf_models.save(ref, tmp_path / "bert")).eval()
    x = inputs_for("bert", config, batch=3, time=6)
    x["attention_mask"][2] = 0
    ref.set_attn_implementation("eager")
    with torch.no_grad():
        got, want = model(**x), ref(**x)
    torch.testing.assert_close(got[0], want.last_hidden_state, **TOL)
    torch.testing.assert_close(got[1], want.pooler_output, **TOL)


def test_llama_folder_from_transformers_4_with_rope_theta_at_the_top(tmp_path):
    """Most folders on the Hub were written by transformers 4: rope_theta and rope_scaling at the top."""
    config = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64,
                  rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                       high_freq_factor=4.0, original_max_position_embeddings=16))
    folder = hf_models.save(hf_models.model("llama", config), tmp_path / "llama")
    rope = config["rope_parameters"]
    edit_config(folder, rope_parameters=None, rope_theta=rope["rope_theta"],
                rope_scaling={k: v for k, v in rope.items() if k != "rope_theta"})
    params = config_params("llama", folder)
    assert (params["rope_theta"], params["rope_type"], params["rope_factor"]) == (500000.0, "llama3", 8.0)
    assert params["original_max_position_embeddings"] == 16


@pytest.mark.parametrize("stem", ["llama", "bert"])
def test_onnx_uses_hugging_faces_names(stem, tmp_path, monkeypatch):
    import onnx
    monkeypatch.chdir(tmp_path)
    run = specc.build_run(SPEC[stem], ZOO_SMALL[stem], out=tmp_path / "run").run_dir
    report = specc.export(run, ("onnx",), latency=False, out=lambda s: None)
    assert report.passed, report.errors
    graph = onnx.load(str(run / "export/model.onnx")).graph
    names = ([i.name for i in graph.input], [o.name for o in graph.output])
    if stem == "bert":
        assert names == (["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state", "pooler_output"])
    else:
        assert names == (["input_ids"], ["logits"])


# ---- bad folders: exit 2, located, with a hint

def gpt2_folder(tmp_path, shard=None):
    ref = hf_models.model("gpt2", dict(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    return hf_models.save(ref, tmp_path / "gpt2", shard)


def edit_config(folder, **changes):
    """Rewrite config.json with `changes` (None deletes a field)."""
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}, indent=2))


def refused(tmp_path, *args):
    r = invoke("build", *args, "--out", tmp_path / "run", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()
    return r.stderr


def test_folder_without_config_json(tmp_path):
    folder = gpt2_folder(tmp_path)
    (folder / "config.json").unlink()
    err = refused(tmp_path, SPEC["gpt2"], "--weights", folder)
    assert err.startswith(f"{folder}: error: not a Hugging Face folder: it has no config.json\nhint: pass a folder")


def test_config_json_that_is_not_json_is_located(tmp_path):
    folder = gpt2_folder(tmp_path)
    text = (folder / "config.json").read_text().replace('"n_layer": 2,', '"n_layer": 2,,')
    (folder / "config.json").write_text(text)
    line, col = next((n, t.index(",,") + 2) for n, t in enumerate(text.splitlines(), 1) if '"n_layer"' in t)
    err = refused(tmp_path, SPEC["gpt2"], "--weights", folder)
    assert err.startswith(f"{folder / 'config.json'}:{line}:{col}: error: config.json is not valid JSON: Expecting "
                          "property name enclosed in double quotes\n")
    assert '"n_layer": 2,,' in err  # the caret line


def test_missing_shard(tmp_path):
    folder = gpt2_folder(tmp_path, "20KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) >= 2
    shards[1].unlink()
    err = refused(tmp_path, SPEC["gpt2"], "--weights", folder)
    n = len(shards)
    assert err.startswith(f"{folder / 'model.safetensors.index.json'}: error: the index names shard 2 of {n}, "
                          f"'{shards[1].name}', which is not in the folder\nhint: the download or copy is incomplete")


def test_index_naming_a_file_that_is_not_there(tmp_path):
    folder = gpt2_folder(tmp_path, "20KB")
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["transformer.ln_f.weight"] = "elsewhere.safetensors"
    index.write_text(json.dumps(data))
    err = refused(tmp_path, SPEC["gpt2"], "--weights", folder)
    assert err.startswith(f"{index}: error: the index names a weight file, 'elsewhere.safetensors', which is not "
                          "in the folder\n")


def test_shards_without_their_index(tmp_path):
    folder = gpt2_folder(tmp_path, "20KB")
    (folder / "model.safetensors.index.json").unlink()
    err = refused(tmp_path, SPEC["gpt2"], "--weights", folder)
    assert err.startswith(f"{folder}: error: the folder has shards (model-00001-of-")
    assert "but no model.safetensors.index.json naming their keys\nhint: " in err


def test_config_field_the_spec_needs_but_the_file_lacks(tmp_path):
    folder = gpt2_folder(tmp_path)
    edit_config(folder, n_embd=None)
    err = refused(tmp_path, SPEC["gpt2"], "--weights", folder)
    line = next(n for n, t in enumerate(SPEC["gpt2"].read_text().splitlines(), 1) if t.strip().startswith("n_embd: n_embd"))
    assert err == (f"{folder / 'config.json'}: error: config.json has no 'n_embd', which the spec needs for its param "
                   f"'n_embd'\nhint: add it to config.json, or mark it optional in hf.config ({SPEC['gpt2']}:{line})\n")


def test_folder_of_another_model_type_names_both(tmp_path):
    folder = gpt2_folder(tmp_path)
    edit_config(folder, model_type="bert")
    err = refused(tmp_path, SPEC["gpt2"], "--weights", folder)
    assert err.splitlines()[0].endswith(f": error: the folder's model_type is 'bert', but {SPEC['gpt2']} reads 'gpt2'")
    assert err.startswith(f"{folder / 'config.json'}:")
    assert '"model_type": "bert"' in err  # the caret line


def test_config_value_the_spec_does_not_implement(tmp_path):
    folder = gpt2_folder(tmp_path)
    edit_config(folder, activation_function="relu")
    err = refused(tmp_path, SPEC["gpt2"], "--weights", folder)
    assert f"error: config.json's activation_function is 'relu', which {SPEC['gpt2']} does not implement (it reads " \
           "'gelu_new')" in err


def test_config_value_of_another_kind_than_the_param(tmp_path):
    folder = gpt2_folder(tmp_path)
    edit_config(folder, n_head="2")
    err = refused(tmp_path, SPEC["gpt2"], "--weights", folder)
    assert err.startswith(f"{folder / 'config.json'}:")
    assert f": error: config.json's n_head is '2', but param 'n_head' of {SPEC['gpt2']} is a number\n" in err
    assert '"n_head": "2"' in err  # the caret line


def test_spec_without_hf_section(tmp_path):
    err = refused(tmp_path, ROOT / "specs/zoo/gpt.yaml", "--weights", gpt2_folder(tmp_path))
    assert err.startswith(f"{ROOT / 'specs/zoo/gpt.yaml'}: error: the spec has no hf: section, so it cannot read a "
                          "Hugging Face folder\n")


def test_a_weight_stored_transposed_gets_a_hint_saying_so(tmp_path):
    """nanoGPT's layout uses Linear where GPT-2's Conv1D stores [in, out]: same keys, transposed shapes."""
    folder = gpt2_folder(tmp_path)
    params = ["--set", "vocab_size=100", "--set", "block_size=32", "--set", "n_layer=2", "--set", "n_head=2",
              "--set", "n_embd=32"]
    err = refused(tmp_path, ROOT / "specs/zoo/gpt.yaml", *params, "--weights", folder / "model.safetensors")
    assert (f"{folder / 'model.safetensors'}: error: weights do not fit the model: "
            "'transformer.h.0.attn.c_attn.weight' is (32, 96) float32 in the file but (96, 32) float32 in the model\nhint: 'transformer.h.0.attn.c_attn.weight' is stored "
            "transposed, [32, 96] for the model's [96, 32] (as GPT-2's Conv1D stores [in, out]): declare it as a "
            "Parameter of shape [32, 96] and use matmul, as specs/zoo/gpt2.yaml does\n") in err
