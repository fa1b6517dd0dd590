"""`specc generate` from any causal LM run through the KV-cache decoder: token ids in and out, text with a
tokenizer.json, sampling options, stop, batches, the streaming generator, and the ONNX export with past."""
import json

import onnx
import pytest
import torch

import specc
from compiler.errors import SpecError
from conftest import ROOT, invoke
from specc.generating import LanguageModel, Sampling, stream

GPT = ["vocab_size=61", "block_size=40", "n_layer=2", "n_head=2", "n_embd=32"]
WORDS = ["[UNK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "red", "ball", "."]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The zoo GPT, built (never trained: an LM run needs no text: data to generate)."""
    root = tmp_path_factory.mktemp("lm")
    r = invoke("build", ROOT / "specs/zoo/gpt.yaml", *sum((["--set", p] for p in GPT), []), "--out", root / "run",
               "-q", cwd=root)
    assert r.returncode == 0, r.stderr
    return root / "run"


@pytest.fixture(scope="module")
def text_run(run, tmp_path_factory):
    """The same run with a word-level tokenizer.json beside its weights: text in and out."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    import shutil
    copy = tmp_path_factory.mktemp("text") / "run"
    shutil.copytree(run, copy)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(copy / "tokenizer.json"))
    return copy, tok


def recompute(run, prompt, n):
    model = specc.api.compiled_run(run).module.eval()
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids


def test_token_ids_in_and_out_greedy_as_a_full_recompute(run):
    r = invoke("generate", run, "--prompt", "5 17 3", "--tokens", "12", "--top-k", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == " ".join(map(str, recompute(run, [5, 17, 3], 12))) + "\n"


def test_prompt_ids_outside_the_vocabulary_are_exit_2(run):
    r = invoke("generate", run, "--prompt", "5 61 3")
    assert r.returncode == 2
    assert r.stderr.splitlines()[:2] == ["--prompt: error: the prompt holds token 61; the model's vocabulary is 61 "
                                         "(ids 0..60)", "hint: use ids below the vocabulary size"]
    r = invoke("generate", run, "--prompt", "the cat")
    assert r.returncode == 2 and r.stderr.splitlines()[0] == "--prompt: error: this run reads token ids, not 'the cat'"
    r = invoke("generate", run, "--prompt", "5", "--top-p", "1.5")
    assert r.returncode == 2 and r.stderr.splitlines()[0] == "--top-p: error: --top-p must be in (0, 1], got 1.5"


def test_device_says_where_the_decoder_runs_and_what_this_machine_lacks(run):
    assert specc.generate(run, [5, 17, 3], tokens=6, top_k=1, device="cpu") == \
        " ".join(map(str, recompute(run, [5, 17, 3], 6)))
    if not torch.cuda.is_available():
        r = invoke("generate", run, "--prompt", "5", "--device", "cuda")
        assert (r.returncode, r.stderr.splitlines()[:2]) == (2, [
            "--device: error: device 'cuda' asked for, but CUDA is not available",
            "hint: use --device cpu, or --device auto (CUDA when there is one)"])
    for device, onnx, message in (("tpu9", False, "'tpu9' is not a device"),
                                  ("cuda", True, "--onnx decodes in onnxruntime on the CPU; --device cuda is for the "
                                                 "torch decoder")):
        with pytest.raises(SpecError) as e:
            specc.generate(run, "5", tokens=2, onnx=onnx, device=device)
        assert (e.value.diagnostics[0].file, e.value.diagnostics[0].message) == ("--device", message)


@pytest.fixture(scope="module")
def lm(run):
    return LanguageModel.load(run)  # loaded once, as a server would


def test_sampling_is_seeded_and_its_options_narrow_it(lm):
    def sample(**options):
        return lm.generate(["5 17 3"], 20, Sampling(**options))[0]
    a = sample(seed=1)
    assert a == sample(seed=1) and a != sample(seed=2)
    greedy = sample(top_k=1, seed=4)
    assert greedy == sample(top_k=1, seed=5)
    # a nucleus so small that only the likeliest token is left is greedy too, and so is a cold temperature
    assert sample(top_p=1e-6, seed=6) == greedy
    assert sample(temperature=1e-4, seed=7) == greedy
    assert sample(top_k=3, top_p=0.9, temperature=0.7, seed=1) == sample(top_k=3, top_p=0.9, temperature=0.7, seed=1)


def test_stop_ends_before_the_stop_token(run):
    ids = recompute(run, [5, 17, 3], 12)
    stop = ids[3 + 6]  # the 7th new token
    first = ids.index(stop, 3)
    r = invoke("generate", run, "--prompt", "5 17 3", "--tokens", "12", "--top-k", "1", "--stop", str(stop))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(i) for i in ids[:first]]


def test_prompts_of_different_lengths_run_as_one_batch(run, lm):
    prompts = ["7", "1 2 3 4 5 6 7 8 9", "30 31 32 33"]
    batched = specc.generate(run, prompts, tokens=10, top_k=1)
    assert batched == [lm.generate([p], 10, Sampling(top_k=1))[0] for p in prompts]
    assert batched[1].split() == [str(i) for i in recompute(run, range(1, 10), 10)]


def test_stream_yields_the_tokens_one_at_a_time(run, lm):
    tokens = stream(lm, "5 17 3", tokens=8, sampling=Sampling(top_k=1))
    first = next(tokens)  # the first token comes before the rest are decoded
    assert lm.decoder.length == 3
    rest = list(tokens)
    assert [first.id] + [t.id for t in rest] == recompute(run, [5, 17, 3], 8)[3:]
    assert "5 17 3" + "".join(t.text for t in [first, *rest]) == lm.generate(["5 17 3"], 8, Sampling(top_k=1))[0]


def test_with_a_tokenizer_text_goes_in_and_out(text_run):
    run, tok = text_run
    ids = recompute(run, tok.encode("the cat sat").ids, 10)
    text = specc.generate(run, "the cat sat", tokens=10, top_k=1)
    assert text == tok.decode(ids)  # the words of the continuation spaced as the tokenizer spaces them
    pieces = list(stream(run, "the cat sat", tokens=10, sampling=Sampling(top_k=1)))
    assert [p.id for p in pieces] == ids[3:]
    assert "the cat sat" + "".join(p.text for p in pieces) == text
    r = invoke("generate", run, "--prompt", "the cat sat", "--tokens", "10", "--top-k", "1")
    assert r.returncode == 0 and r.stdout == text + "\n"
    # a stop string cuts the text before it, in the batch result and in the stream alike
    word = tok.decode(ids[7:8])
    cut = specc.generate(run, "the cat sat", tokens=10, top_k=1, stop=word)
    assert cut == text[:text.index(" " + word, len("the cat sat"))] + " "
    streamed = "".join(p.text for p in stream(run, "the cat sat", 10, Sampling(top_k=1, stop=(word,))))
    assert "the cat sat" + streamed == cut


def test_an_imported_folder_brings_its_tokenizer_and_its_eos(tmp_path):
    """`specc build llama.yaml --weights DIR`: DIR's tokenizer.json gives text in and out, and its eos_token_id
    ends generation, as transformers' generate would."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from refs import hf_models
    if not hf_models.available():
        pytest.skip("transformers (test-only dependency) not installed")
    eos = WORDS.index("to")  # a word this model says after "the dog ran" (greedy, seed 0)
    config = dict(LLAMA, vocab_size=len(WORDS), eos_token_id=eos)
    folder = hf_models.save(hf_models.model("llama", config), tmp_path / "hf")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    r = invoke("build", ROOT / "specs/zoo/llama.yaml", "--weights", folder, "--out", tmp_path / "run", "-q")
    assert r.returncode == 0, r.stderr
    ids = recompute(tmp_path / "run", tok.encode("the dog ran").ids, 12)
    assert eos in ids[3:]
    new = ids[3:ids.index(eos, 3)]  # the eos ends it, and is not printed
    assert specc.generate(tmp_path / "run", "the dog ran", tokens=12, top_k=1) == tok.decode(ids[:3] + new)


@pytest.mark.slow
def test_export_with_past_steps_in_onnxruntime_and_generates(run):
    r = invoke("export", run, "--onnx", "--with-past", "-q")
    assert r.returncode == 0, r.stderr
    model = onnx.load(str(run / "export/model_with_past.onnx"))
    inputs = [i.name for i in model.graph.input]
    assert inputs == ["input_ids", "attention_mask", "position_ids", "past_key_values.0.key",
                      "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"]
    assert [o.name for o in model.graph.output] == ["logits", "present.0.key", "present.0.value", "present.1.key",
                                                    "present.1.value"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[3].type.tensor_type.shape.dim]
    assert dims == ["batch", 2, "past_sequence_length", 16]  # [batch, kv_heads, past, head_dim]
    checks = json.loads((run / "export/parity.json").read_text())["checks"]
    past = [c for c in checks if c["format"] == "onnx-with-past"]
    assert len(past) == 1 and past[0]["passed"] and past[0]["sizes"] == {"batch": 2, "steps": 16}
    onnx_out = invoke("generate", run, "--prompt", "5 17 3", "--tokens", "12", "--top-k", "1", "--onnx")
    assert onnx_out.returncode == 0, onnx_out.stderr
    expected = recompute(run, [5, 17, 3], 12)
    assert onnx_out.stdout.split() == [str(i) for i in expected]
    # the export folder runs in onnxruntime-genai as it is (genai_config.json beside the file)
    import onnxruntime_genai as og
    model = og.Model(str(run / "export"))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=15, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens([5, 17, 3])
    genai = []
    while not generator.is_done():
        generator.generate_next_token()
        genai.append(int(generator.get_next_tokens()[0]))
    assert genai == expected[3:]


def test_with_past_needs_a_causal_lm(tmp_path):
    r = invoke("build", ROOT / "specs/transformer_encoder.yaml", "--out", tmp_path / "enc", "-q")
    assert r.returncode == 0
    r = invoke("export", tmp_path / "enc", "--onnx", "--with-past")
    assert r.returncode == 2
    assert r.stderr.splitlines()[0].endswith("error: a KV cache needs a causal language model: one int64 input "
                                             "[batch, time]")
    assert not (tmp_path / "enc/export").exists()


LLAMA = {"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
         "tie_word_embeddings": False, "rope_theta": 10000.0}
FINE_TUNE = """train:
  data: {text: tiny.txt, block_size: 16, val_split: 0.1}
  loss: CrossEntropyLoss
  optimizer: {name: AdamW, lr: 0.003}
  epochs: 2
  batch_size: 8
"""


@pytest.mark.slow
def test_fine_tuning_an_imported_llama_with_frozen_layers(tmp_path):
    """Part 7: a Hugging Face folder imported, its embeddings frozen (trainable: false), fine-tuned on a text
    file: it trains, resumes to exactly the same weights, generates, and exports with past."""
    from safetensors.torch import load_file

    from refs import hf_models
    if not hf_models.available():
        pytest.skip("transformers (test-only dependency) not installed")
    folder = hf_models.save(hf_models.model("llama", LLAMA), tmp_path / "hf")
    (tmp_path / "tiny.txt").write_text("the cat sat on the mat. a dog ran to the red ball.\n" * 40)
    zoo = (ROOT / "specs/zoo/llama.yaml").read_text()
    frozen = zoo.replace("- {name: embed_tokens, op: Embedding,", "- {name: embed_tokens, trainable: false, op: Embedding,")
    assert frozen != zoo
    (tmp_path / "llama.yaml").write_text(frozen + FINE_TUNE)
    for run in ("a", "b"):
        r = invoke("build", tmp_path / "llama.yaml", "--weights", folder, "--out", tmp_path / run, "-q", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "a/summary.json").read_text())
    assert summary["parameters"] - summary["trainable_parameters"] == 256 * 32  # the embeddings
    assert invoke("train", tmp_path / "a", cwd=tmp_path).returncode == 0
    assert invoke("train", tmp_path / "b", "--epochs", "1", cwd=tmp_path).returncode == 0
    r = invoke("train", tmp_path / "b", "--resume", "--epochs", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    imported, a, b = (load_file(p) for p in (folder / "model.safetensors", tmp_path / "a/model.safetensors",
                                              tmp_path / "b/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed: bit for bit the uninterrupted run
    assert torch.equal(a["model.embed_tokens.weight"], imported["model.embed_tokens.weight"])  # frozen
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"], imported["model.layers.0.self_attn.q_proj.weight"])
    text = specc.generate(tmp_path / "a", "the cat", tokens=8, top_k=1)  # a text: run: bytes in and out
    assert text.startswith("the cat") and len(text.encode()) == len("the cat") + 8
    r = invoke("export", tmp_path / "a", "--with-past", "-q", cwd=tmp_path)  # alone: only the file with past
    assert r.returncode == 0, r.stderr
    checks = json.loads((tmp_path / "a/export/parity.json").read_text())["checks"]
    assert [c["format"] for c in checks] == ["onnx-with-past"] and checks[0]["passed"]
    assert sorted(p.name for p in (tmp_path / "a/export").iterdir()) == [
        "genai_config.json", "model_with_past.onnx", "parity.json", "parity.md"]
