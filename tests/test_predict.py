"""Inference on trained runs: `specc predict` (csv/npz tables, image folders, text lines; torch and
--onnx, which must agree) and `specc generate` (the zoo GPT trained on a text file; seeded)."""
import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import specc
from conftest import ROOT, invoke

COLORS = ("red", "green", "blue")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def export_onnx(run):
    report = specc.export(run, ("onnx",), latency=False, out=lambda s: None)
    assert report.passed and (run / "export/model.onnx").is_file()


def read_csv(text):
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture(scope="module")
def house(tmp_path_factory):
    """The article's linear regression on the housing table, trained and exported to ONNX."""
    run = specc.train(ROOT / "specs/linear_regression.yaml", progress=False,
                      out=tmp_path_factory.mktemp("house") / "run").run_dir
    export_onnx(run)
    return run


def test_tabular_regression_predictions_are_denormalized(house, tmp_path):
    (tmp_path / "new.csv").write_text("age,area,note\n5,120,1\n3,200,2\n1,150,3\n")  # any column order, extra columns
    r = invoke("predict", house, "--data", tmp_path / "new.csv")
    assert r.returncode == 0, r.stderr
    rows = read_csv(r.stdout)
    assert rows[0] == ["area", "age", "price"]
    assert [row[:2] for row in rows[1:]] == [["120", "5"], ["200", "3"], ["150", "1"]]
    # by hand: min-max normalize with the training statistics, apply the weights, map price back
    w = load_file(house / "model.safetensors")
    stats = json.loads((house / "normalization.json").read_text())
    x = (np.array([[120, 5], [200, 3], [150, 1]]) - stats["inputs"][0]["center"]) / stats["inputs"][0]["scale"]
    y = x @ w["linear.weight"].double().numpy().T + w["linear.bias"].double().numpy()
    price = y[:, 0] * stats["target"]["scale"][0] + stats["target"]["center"][0]
    assert np.allclose([float(row[2]) for row in rows[1:]], price, rtol=1e-5)
    assert 20 < float(rows[1][2]) < 40  # the training row (120, 5) cost 30

    out = invoke("predict", house, "--data", tmp_path / "new.csv", "--out", tmp_path / "p.csv", "--onnx")
    assert out.returncode == 0 and out.stdout == "" and out.stderr == f"wrote {tmp_path / 'p.csv'} (3 rows)\n"
    onnx_rows = read_csv((tmp_path / "p.csv").read_text())
    assert onnx_rows[0] == rows[0] and np.allclose([float(r[2]) for r in onnx_rows[1:]], price, rtol=1e-5)

    np.savez(tmp_path / "new.npz", area=np.array([120.0, 200.0, 150.0]), age=np.array([5.0, 3.0, 1.0]))
    npz = invoke("predict", house, "--data", tmp_path / "new.npz", "--batch-size", "2")
    assert read_csv(npz.stdout) == rows


def test_predict_errors(house, tmp_path):
    (tmp_path / "new.csv").write_text("area,size\n120,5\n")
    r = invoke("predict", house, "--data", tmp_path / "new.csv")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"{tmp_path / 'new.csv'}: error: column 'age' is not in {tmp_path / 'new.csv'}",
                                     "hint: the run was trained on the columns area, age"]
    (tmp_path / "bad.csv").write_text("area,age\n120,old\n")
    r = invoke("predict", house, "--data", tmp_path / "bad.csv")
    assert r.returncode == 2 and r.stderr.splitlines()[0] == (
        f"{tmp_path / 'bad.csv'}:2:5: error: non-numeric value 'old' in column 'age'")
    r = invoke("predict", house, "--data", tmp_path / "nothing.csv")
    assert r.returncode == 2 and r.stderr.splitlines()[0] == f"{tmp_path / 'nothing.csv'}: error: no such file or folder"
    built = tmp_path / "untrained"
    assert invoke("build", ROOT / "specs/mlp2_zigzag.yaml", "--out", built, "-q").returncode == 0
    r = invoke("predict", built, "--data", tmp_path / "new.csv")
    assert r.returncode == 2 and r.stderr.splitlines()[0] == f"{built}: error: this run was never trained"


def test_tabular_classification_gives_the_class_and_its_probability(tmp_path):
    run = specc.train(ROOT / "tests/cases/train/blobs_dropout.yaml", ["train.epochs=3"], progress=False,
                      out=tmp_path / "blobs").run_dir
    from specc.training.synthetic import blobs
    x, y = blobs({"samples": 6000, "classes": 4, "spread": 2.0}, [("batch", 8)], np.random.default_rng(3))
    np.savez(tmp_path / "points.npz", x=x[0][:50])
    r = invoke("predict", run, "--data", tmp_path / "points.npz")
    assert r.returncode == 0, r.stderr
    rows = read_csv(r.stdout)
    assert rows[0] == ["row", "class", "probability"] and len(rows) == 51
    classes, probs = np.array([int(row[1]) for row in rows[1:]]), np.array([float(row[2]) for row in rows[1:]])
    assert (classes == y[:50]).mean() > 0.9  # the same blobs the run was trained on
    assert ((0.25 <= probs) & (probs <= 1)).all()
    stats = json.loads((run / "normalization.json").read_text())["inputs"][0]
    module = specc.api.compiled_run(run).module.eval()
    with torch.no_grad():
        p = torch.softmax(module(torch.as_tensor((x[0][:50] - stats["center"]) / stats["scale"], dtype=torch.float32)), -1)
    assert np.allclose(probs, p.max(-1).values.numpy(), atol=1e-5) and (p.argmax(-1).numpy() == classes).all()


# --- images ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def colors(tmp_path_factory):
    """A CNN trained on a folder of PNGs (a class per subfolder), exported to ONNX."""
    root = tmp_path_factory.mktemp("colors")
    rng = np.random.default_rng(0)
    for k, name in enumerate(COLORS):
        (root / "pics" / name).mkdir(parents=True)
        for i in range(12):
            px = rng.uniform(0, 0.4, (20, 24, 3))
            px[..., k] += 0.5
            Image.fromarray((px * 255).astype(np.uint8)).save(root / "pics" / name / f"{i:03d}.png")
    spec = root / "colors.yaml"
    spec.write_text("""specc: 1
name: colors
inputs:
  x: [batch, 3, 16, 16]
layers:
  - {op: Conv2d, out_channels: 8, kernel_size: 3, padding: 1}
  - ReLU
  - {op: AdaptiveAvgPool2d, output_size: 1}
  - {op: flatten, start_dim: 1}
  - {name: head, op: Linear, out_features: 3}
train:
  data: {images: pics, size: [16, 16], normalize: standard, augment: {flip: true}, val_split: 0.25}
  loss: CrossEntropyLoss
  optimizer: {name: Adam, lr: 0.02}
  epochs: 6
  batch_size: 8
""")
    run = specc.train(spec, progress=False, out=root / "run").run_dir
    export_onnx(run)
    return root, run


def test_image_folders_by_class_or_flat_give_file_class_probability(colors, tmp_path):
    root, run = colors
    r = invoke("predict", run, "--data", root / "pics", "--batch-size", "5")
    assert r.returncode == 0, r.stderr
    rows = read_csv(r.stdout)
    assert rows[0] == ["file", "class", "probability"] and len(rows) == 37
    assert sum(row[1] == row[0].split("/")[-2] for row in rows[1:]) >= 35  # the class is the folder's name
    assert all(1 / 3 <= float(row[2]) <= 1 for row in rows[1:])

    flat = tmp_path / "photos"
    flat.mkdir()
    for color in ("red", "blue"):
        Image.open(root / "pics" / color / "000.png").save(flat / f"{color}.png")
    r = invoke("predict", run, "--data", flat)
    assert [row[:2] for row in read_csv(r.stdout)] == [["file", "class"], [str(flat / "blue.png"), "blue"],
                                                      [str(flat / "red.png"), "red"]]
    one = invoke("predict", run, "--data", flat / "red.png")
    assert [row[:2] for row in read_csv(one.stdout)[1:]] == [[str(flat / "red.png"), "red"]]

    onnx = invoke("predict", run, "--data", root / "pics", "--onnx")
    assert onnx.returncode == 0, onnx.stderr
    a, b = read_csv(invoke("predict", run, "--data", root / "pics").stdout), read_csv(onnx.stdout)
    assert [row[:2] for row in a] == [row[:2] for row in b]
    assert np.allclose([float(row[2]) for row in a[1:]], [float(row[2]) for row in b[1:]], atol=1e-5)


def test_onnx_needs_an_export(tmp_path):
    run = specc.train(ROOT / "specs/mlp2_zigzag.yaml", epochs=1, progress=False, out=tmp_path / "zig").run_dir
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1), np.float32))
    r = invoke("predict", run, "--data", tmp_path / "x.npz", "--onnx")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"{run}/export/model.onnx: error: the run has no ONNX export", f"hint: export it first: specc export {run} --onnx"]


# --- text: the zoo GPT ------------------------------------------------------------------------------

GPT = ["vocab_size=256", "block_size=32", "n_layer=2", "n_head=2", "n_embd=64"]
TRAIN_SECTION = """train:
  data: {text: tiny.txt, block_size: 32, val_split: 0.1}
  loss: CrossEntropyLoss
  optimizer: {name: AdamW, lr: 0.003}
  epochs: 10
  batch_size: 8
"""


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    """specs/zoo/gpt.yaml, small by --set, with a train section, trained on a repetitive text."""
    root = tmp_path_factory.mktemp("gpt")
    rng = np.random.default_rng(0)
    sentences = ["the cat sat on the mat.", "a dog ran to the red ball.", "my bird sang a song.",
                 "one fish swam in the blue sea."]
    (root / "tiny.txt").write_text("\n".join(" ".join(rng.choice(sentences, 2)) for _ in range(300)) + "\n")
    spec = root / "gpt.yaml"
    spec.write_text((ROOT / "specs/zoo/gpt.yaml").read_text() + TRAIN_SECTION)
    r = invoke("train", spec, *sum((["--set", p] for p in GPT), []), "--out", root / "run", cwd=root)
    assert r.returncode == 0, r.stderr
    return root, root / "run", r


def test_the_zoo_gpt_learns_a_text_file(gpt):
    root, run, r = gpt
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 10
    assert float(rows[-1]["val_loss"]) < 0.5  # uniform over 256 bytes is ln 256 = 5.55
    assert float(rows[-1]["val_accuracy"]) > 0.8  # per token
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])


def test_predict_on_a_text_file_gives_the_next_byte_of_each_line(gpt, tmp_path):
    root, run, _ = gpt
    (tmp_path / "prompts.txt").write_text("the cat sat o\na dog ran to the red bal\n")
    r = invoke("predict", run, "--data", tmp_path / "prompts.txt")
    assert r.returncode == 0, r.stderr
    rows = read_csv(r.stdout)
    assert rows[0] == ["prompt", "next", "probability"]
    model = specc.api.compiled_run(run).module.eval()
    for prompt, nxt, _ in rows[1:]:  # the model's own likeliest next byte, as torch computes it
        with torch.no_grad():
            logits = model(torch.tensor([list(prompt.encode())]))
        assert nxt == chr(int(logits[0, -1].argmax()))
    assert rows[1][:2] == ["the cat sat o", "n"]  # and it learned the text
    export_onnx(run)
    onnx = read_csv(invoke("predict", run, "--data", tmp_path / "prompts.txt", "--onnx").stdout)
    assert [row[:2] for row in onnx] == [row[:2] for row in rows]
    assert np.allclose([float(x[2]) for x in onnx[1:]], [float(x[2]) for x in rows[1:]], atol=1e-4)


def test_generate_is_seeded_and_reproducible(gpt):
    root, run, _ = gpt
    a = invoke("generate", run, "--prompt", "the cat", "--tokens", "60", "--seed", "1")
    assert a.returncode == 0, a.stderr
    again = invoke("generate", run, "--prompt", "the cat", "--tokens", "60", "--seed", "1")
    other = invoke("generate", run, "--prompt", "the cat", "--tokens", "60", "--seed", "2")
    assert a.stdout == again.stdout and a.stdout != other.stdout
    assert a.stdout.startswith("the cat") and a.stdout.endswith("\n")
    text = specc.generate(run, "the cat", tokens=60, seed=1)
    assert text + "\n" == a.stdout  # the API and the CLI sample the same bytes

    # top-k 1 is greedy: any seed, the likeliest byte each time, as the model says
    greedy = specc.generate(run, "the dog", tokens=20, top_k=1, seed=5)
    assert greedy == specc.generate(run, "the dog", tokens=20, top_k=1, seed=9)
    model = specc.api.compiled_run(run).module.eval()
    ids = list(b"the dog")
    with torch.no_grad():
        for _ in range(20):
            ids.append(int(model(torch.tensor([ids[-32:]]))[0, -1].argmax()))
    assert greedy == bytes(ids).decode()
    cold = specc.generate(run, "the dog", tokens=40, temperature=0.05, seed=3)
    assert cold[:27] == greedy  # a low temperature is nearly greedy


def test_generate_errors(gpt, house):
    root, run, _ = gpt
    r = invoke("generate", house, "--prompt", "x")
    assert r.returncode == 2 and r.stderr.splitlines()[0] == (
        f"{house}: error: cannot generate from this run: a KV cache needs a causal language model: one int64 "
        "input [batch, time]")
    for flag, value, message in (("--tokens", "0", "--tokens: error: --tokens must be at least 1, got 0"),
                                 ("--temperature", "0", "--temperature: error: --temperature must be > 0, got 0.0"),
                                 ("--top-k", "0", "--top-k: error: --top-k must be at least 1, got 0")):
        r = invoke("generate", run, "--prompt", "the", flag, value)
        assert r.returncode == 2 and r.stderr.splitlines()[0] == message
    prompt = "the cat sat on the mat. a dog ran to the red ball. " * 3  # 153 bytes: past the block size (32)
    long = specc.generate(run, prompt, tokens=5, seed=0)
    assert long.startswith(prompt) and len(long.encode()) == len(prompt) + 5  # it reads the last 32 bytes
