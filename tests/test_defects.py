"""Defects found on real data (issue 20): each test fails on the code before its fix."""
import json

import numpy as np
import torch
import pytest

import specc
from conftest import ROOT, invoke
from specc.verified import checked_onnx
from compiler.errors import SpecError


@pytest.fixture(scope="module")
def zig(tmp_path_factory):
    """A trained run with a passed ONNX export."""
    run = specc.train(ROOT / "specs/mlp2_zigzag.yaml", epochs=1, progress=False,
                      out=tmp_path_factory.mktemp("zig") / "run").run_dir
    assert specc.export(run, ("onnx",), latency=False, out=lambda s: None).passed
    return run


# --- 3: an unchecked artifact is not used without a word ---------------------------------------------

def test_predict_refuses_an_onnx_file_whose_parity_did_not_pass(zig, tmp_path):
    from exporters import to_onnx
    path = zig / "export/model.onnx"
    assert checked_onnx(zig) == path
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1), np.float32))
    good = invoke("predict", zig, "--data", tmp_path / "x.npz", "--onnx")
    assert good.returncode == 0 and good.stderr == ""
    parity = (zig / "export/parity.json").read_text()
    try:
        to_onnx.record_verdict(path, "pending")  # what an export killed before its parity check leaves
        r = invoke("predict", zig, "--data", tmp_path / "x.npz", "--onnx")
        assert r.returncode == 2 and r.stderr.splitlines() == [
            f"{path}: error: its parity was never checked (the export that wrote it did not finish)",
            f"hint: export it again (specc export {zig} --onnx), or pass --allow-unchecked to use it anyway"]
        loud = invoke("predict", zig, "--data", tmp_path / "x.npz", "--onnx", "--allow-unchecked")
        assert loud.returncode == 0 and loud.stdout == good.stdout
        assert loud.stderr.startswith(f"warning: {path}: its parity was never checked")
        to_onnx.record_verdict(path, "passed")
        (zig / "export/parity.json").unlink()  # the file says passed, but no report backs it
        with pytest.raises(SpecError, match="has no parity.json"):
            checked_onnx(zig)
        report = json.loads(parity)
        report["checks"][0]["passed"] = False
        (zig / "export/parity.json").write_text(json.dumps(report))
        with pytest.raises(SpecError, match="parity.json says its parity check failed"):
            checked_onnx(zig)
    finally:
        to_onnx.record_verdict(path, "passed")
        (zig / "export/parity.json").write_text(parity)
    assert checked_onnx(zig) == path


# --- 8: smaller points ----------------------------------------------------------------------------------

def test_did_you_mean_prefers_a_case_insensitive_match():
    from compiler.errors import did_you_mean
    assert did_you_mean("Adamw", ["Adam", "AdamW", "SGD"]) == "did you mean 'AdamW'?"
    with pytest.raises(SpecError) as info:
        specc.build(ROOT / "tests/cases/bad/train_optimizer_case.yaml")
    assert info.value.diagnostics[0].hint == "did you mean 'AdamW'?"


# --- 1, 2: class folders against the classifier's outputs -------------------------------------------------

def _pictures(root, classes, per_class=3):
    from PIL import Image
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _image_spec(tmp_path, outputs, extra=""):
    spec = tmp_path / "digits.yaml"
    spec.write_text(f"""specc: 1
name: digits
inputs:
  x: [batch, 1, 8, 8]
layers:
  - {{op: flatten, start_dim: 1}}
  - {{name: head, op: Linear, out_features: {outputs}}}
train:
  data: {{images: pics, val_split: 0.2{extra}}}
  loss: CrossEntropyLoss
  optimizer: {{name: SGD, lr: 0.1}}
  epochs: 1
""")
    return spec


@pytest.mark.parametrize("outputs", [2, 4])
def test_more_class_folders_than_outputs_is_an_error_at_the_output_node(tmp_path, outputs):
    _pictures(tmp_path / "pics", [str(k) for k in range(outputs + (8 if outputs == 2 else 1))])
    spec = _image_spec(tmp_path, outputs)
    r = invoke("train", spec, "--out", tmp_path / "run")
    folders = outputs + (8 if outputs == 2 else 1)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == f"{spec}:7:5: error: the output 'head' scores {outputs} classes, but {tmp_path / 'pics'} " \
                       f"has {folders} class folders ({', '.join(map(str, range(folders)))})"
    assert lines[-1] == f"hint: make the last layer's out_features {folders}, or remove the extra class folders " \
                        f"(train.data at {spec}:9:18)"
    assert not (tmp_path / "run").exists()  # 8: a failed train of a spec leaves no half-made run folder


def test_an_empty_class_folder_is_refused_at_the_folder(tmp_path):
    _pictures(tmp_path / "pics", ["a", "b"])
    (tmp_path / "pics" / "c").mkdir()
    spec = _image_spec(tmp_path, 3)
    r = invoke("train", spec, "--out", tmp_path / "run")
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == f"{tmp_path / 'pics' / 'c'}: error: this class folder holds no images " \
                                       "(.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff)"


def test_every_corrupt_image_is_reported_up_to_a_limit(tmp_path):
    from specc.training.sources import MAX_REPORTED
    _pictures(tmp_path / "pics", ["a", "b"], per_class=30)
    broken = sorted((tmp_path / "pics" / "b").glob("*.png"))[:MAX_REPORTED + 3]
    for f in broken:
        f.write_bytes(b"not a png")
    r = invoke("train", _image_spec(tmp_path, 2), "--out", tmp_path / "run")
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert [e.split(":")[0] for e in errors] == [str(f) for f in broken[:MAX_REPORTED]]
    assert "; 3 more bad images are not listed\n" in r.stderr


def test_every_bad_csv_cell_is_reported(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,x,0\n2,3\n4,5,z\n")
    spec = tmp_path / "t.yaml"
    spec.write_text("""specc: 1
name: t
inputs: {x: [batch, 2]}
layers: [{op: Linear, out_features: 1}]
train: {data: {csv: t.csv}, loss: MSELoss, optimizer: {name: SGD, lr: 0.1}}
""")
    r = invoke("train", spec, "--out", tmp_path / "run")
    assert r.returncode == 2
    assert [line for line in r.stderr.splitlines() if ": error: " in line] == [
        f"{tmp_path / 't.csv'}:2:3: error: non-numeric value 'x' in column 'b'",
        f"{tmp_path / 't.csv'}:3:1: error: row has 2 fields, the header has 3",
        f"{tmp_path / 't.csv'}:4:5: error: non-numeric value 'z' in column 'y'"]


# --- 7: early stopping keeps the best epoch's weights -----------------------------------------------------

def _weights(run):
    from safetensors.torch import load_file
    return load_file(run / "model.safetensors")


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_keeps_the_best_weights_across_a_resume(tmp_path):
    zig = ROOT / "specs/mlp2_zigzag.yaml"
    # min_delta so large that no epoch after the first counts as better: epoch 1 is the best
    stop = ["train.early_stopping={patience: 2, monitor: val_loss, min_delta: 1.0e+9}"]
    first = specc.train(zig, ["train.epochs=1"], progress=False, out=tmp_path / "one").run_dir
    last = specc.train(zig, ["train.epochs=3"], progress=False, out=tmp_path / "three").run_dir
    run = tmp_path / "stopped"
    specc.train(zig, stop, epochs=2, progress=False, out=run)  # a first process ends after epoch 2 ...
    result = specc.train(run, epochs=3, resume=True, progress=False)  # ... a second one stops early at 3
    assert result.history[-1]["stopped_early"] and result.epochs == 3 and result.weights_from_epoch == 1
    assert _same(_weights(run), _weights(first)) and not _same(_weights(run), _weights(last))
    trained = json.loads((run / "summary.json").read_text())["trained"]
    assert trained["weights_from_epoch"] == 1 and trained["best"]["epoch"] == 1 and trained["epochs"] == 3
    keep_last = specc.train(zig, stop + ["train.early_stopping.restore_best=false"], progress=False,
                            out=tmp_path / "last")
    assert keep_last.weights_from_epoch == 3 and _same(_weights(keep_last.run_dir), _weights(last))


# --- 3: an export is all or nothing -------------------------------------------------------------------------

def _snapshot(folder):
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


@pytest.mark.slow
def test_ctrl_c_during_an_export_leaves_the_previous_export_whole(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    run = specc.train(ROOT / "specs/mlp2_zigzag.yaml", epochs=1, progress=False, out=tmp_path / "zig").run_dir
    assert specc.export(run, ("onnx",), quantize="int8", latency=False, out=lambda s: None).passed
    before = _snapshot(run / "export")
    assert set(before) == {"model.onnx", "model.int8.onnx", "parity.json", "parity.md"}
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "specc", "export", str(run), "--onnx", "--quantize", "int8",
                             "--fp16"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, hit = time.monotonic() + 240, None
    while proc.poll() is None and hit is None and time.monotonic() < deadline:
        hit = next(iter(run.glob(".export.partial-*/model.int8*.onnx")), None)  # the variant under way
        time.sleep(0.002)
    assert hit is not None, "the export ended before its int8 variant was seen"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert err.strip().endswith("interrupted")
    assert _snapshot(run / "export") == before  # byte for byte
    assert [p.name for p in run.iterdir() if p.name.startswith(".export")] == []
    assert checked_onnx(run) == run / "export/model.onnx"

    r = invoke("export", run, "--onnx")  # a new export replaces export/ whole: no stale variant stays
    assert r.returncode == 0, r.stderr
    assert f"note: removed {run / 'export/model.int8.onnx'} from an earlier export" in r.stdout
    assert sorted(p.name for p in (run / "export").iterdir()) == ["model.onnx", "parity.json", "parity.md"]
    v = invoke("export", run, "--verify")  # no format flag: it checks what exists
    assert v.returncode == 0, v.stdout + v.stderr
    assert [a["format"] for a in json.loads((run / "export/parity.json").read_text())["artifacts"]] == ["onnx"]
    assert checked_onnx(run) == run / "export/model.onnx"


# --- 4: hints follow the errno --------------------------------------------------------------------------------

def test_write_hints_follow_the_errno_of_a_real_failure(tmp_path, zig):
    import errno
    import os
    import resource
    import subprocess
    import sys
    from specc.fsutil import write_hint
    # root ignores permissions, but not sysfs: creating a file there is refused by the kernel itself
    # (EACCES where /sys is writable to root, EROFS where a container mounts it read-only)
    with pytest.raises(OSError) as denied:
        os.open("/sys/.specc-probe", os.O_CREAT | os.O_WRONLY)
    hint = {errno.EACCES: "check the folder's permissions (or write somewhere else)",
            errno.EROFS: "the file system is read-only: write somewhere else"}[denied.value.errno]
    assert write_hint(denied.value.strerror) == hint
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1), np.float32))
    r = invoke("predict", zig, "--data", tmp_path / "x.npz", "--out", "/sys/.specc-predictions.csv")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"error: cannot write /sys/.specc-predictions.csv: {denied.value.strerror}",
                                     f"hint: {hint}, and run it again; files already there were left as they were"]
    r = invoke("build", ROOT / "specs/mlp2_zigzag.yaml", "--out", "/sys/specc-run")  # mkdir: EPERM, EACCES or EROFS
    assert r.returncode == 1 and "Traceback" not in r.stderr and "disk space" not in r.stderr, r.stderr
    assert "hint: check the folder's permissions" in r.stderr or "hint: the file system is read-only" in r.stderr
    code = f"""import os, signal, resource
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))
fd = os.open({str(tmp_path / "big")!r}, os.O_CREAT | os.O_WRONLY)
try:
    while True:
        os.write(fd, bytes(100))  # the first write stops at the limit, the next fails
except OSError as e:
    print(e.strerror)
"""
    big = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    assert big == os.strerror(errno.EFBIG)
    assert write_hint(big) == "raise the file-size limit (ulimit -f), or write a smaller file"
    assert write_hint(os.strerror(errno.ENOSPC)) == "free some disk space"
    assert write_hint(os.strerror(errno.EROFS)) == "the file system is read-only: write somewhere else"


# --- 5: train values are type-checked at build, --set ones too -------------------------------------------------

def test_a_set_train_value_of_the_wrong_type_fails_build_at_the_set(tmp_path):
    r = invoke("build", ROOT / "specs/mlp2_zigzag.yaml", "--set", "train.optimizer.lr=fast", "--out", tmp_path / "run")
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["--set:1:20: error: argument 'lr' of Adam must be float, got a string 'fast'",
                                     "    train.optimizer.lr=fast", "                       ^", "hint: lr: 0.001"]
    assert not (tmp_path / "run").exists()  # nothing written into a spec.yaml


def test_weights_map_rules_and_unpickler_errors_read_as_written(tmp_path):
    from specc import weights
    state = {"module.a": torch.zeros(1), "module.b": torch.zeros(1)}
    assert list(weights.rename(state, ["module."])) == ["a", "b"]
    with pytest.raises(SpecError) as info:
        weights.rename(state, [r"^module\.(.*)=\1", "model."])  # the second matches nothing once the first ran
    d = info.value.diagnostics[0]
    assert (d.file, d.message, d.hint) == ("--weights-map", "rule 'model.' matches no key of the file",
                                           "the keys (after the rules before it) are: a, b")
    with pytest.raises(SpecError) as info:
        weights.rename(state, [r"(\d=x"])
    assert info.value.diagnostics[0].message.startswith(r"bad rule '(\d=x': missing )")  # one backslash, as typed
    torch.save({"w": torch.zeros(1), "f": print}, tmp_path / "w.pth")
    with pytest.raises(SpecError) as info:
        weights.read(tmp_path / "w.pth")
    message = info.value.diagnostics[0].message
    assert message == "not a state_dict specc can read safely: WeightsUnpickler error: Unsupported global: " \
                      "GLOBAL print was not an allowed global by default."  # whole: not cut inside a word


def test_predict_echoes_csv_inputs_as_read_and_refuses_a_csv_for_an_image_run(tmp_path, zig):
    (tmp_path / "new.csv").write_text("x\n0.123456789\n-1.5e-07\n")
    r = invoke("predict", zig, "--data", tmp_path / "new.csv")
    assert r.returncode == 0, r.stderr
    assert [line.split(",")[0] for line in r.stdout.splitlines()] == ["x", "0.123456789", "-1.5e-07"]
    _pictures(tmp_path / "pics", ["a", "b"])
    run = specc.train(_image_spec(tmp_path, 2), progress=False, out=tmp_path / "digits").run_dir
    r = invoke("predict", run, "--data", tmp_path / "new.csv")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"{tmp_path / 'new.csv'}: error: this run classifies images; new.csv is not an image file",
        "hint: pass an image or a folder of images (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff)"]


def test_a_bad_n_head_is_reported_once():
    with pytest.raises(SpecError) as info:
        specc.build(ROOT / "tests/cases/bad/reshape_bad_heads_once.yaml")
    (d,) = info.value.diagnostics
    assert d.hint == "reshape expects the same number of elements; the same for 'k' at line 10, 'v' at line 11"


# --- 9: behaviours the suite did not pin down ----------------------------------------------------------------

@pytest.mark.parametrize("ref,got,passes", [
    (float("nan"), 1.0, False), (1.0, float("nan"), False),  # NaN where the other is finite
    (float("inf"), 1.0, False), (1.0, float("inf"), False), (float("-inf"), float("inf"), False),
    (float("nan"), float("nan"), True), (float("inf"), float("inf"), True),  # the same non-finite value
    (1.0, 1.0 + 1e-7, True),
])
def test_compare_treats_non_finite_values_as_values(ref, got, passes):
    from exporters.parity import compare
    r = torch.tensor([0.5, ref, 2.0])
    g = torch.tensor([0.5, got, 2.0])
    c = compare(["out"], [r], [g], 1e-5, 1e-4)
    assert c.passed is passes
    assert c.out_of_tolerance == (0.0 if passes else 1 / 3)


def test_predict_probabilities_are_those_of_the_normalized_image(tmp_path):
    from PIL import Image
    from safetensors.torch import load_file
    _pictures(tmp_path / "pics", ["a", "b"])
    run = specc.train(_image_spec(tmp_path, 2, ", normalize: standard"), progress=False, out=tmp_path / "r").run_dir
    stats = json.loads((run / "normalization.json").read_text())["inputs"][0]
    assert abs(stats["scale"][0] - 1) > 0.5  # so skipping the normalization would change the probabilities
    r = invoke("predict", run, "--data", tmp_path / "pics" / "a")
    rows = [line.split(",") for line in r.stdout.splitlines()[1:]]
    w = load_file(run / "model.safetensors")
    for file, label, probability in rows:
        with Image.open(file) as im:
            x = (np.asarray(im.convert("L"), np.float64) / 255 - stats["center"][0]) / stats["scale"][0]
        logits = w["head.weight"].double().numpy() @ x.reshape(-1) + w["head.bias"].double().numpy()
        p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert label == ["a", "b"][int(p.argmax())] and abs(float(probability) - p.max()) < 1e-5


@pytest.mark.parametrize("scaler", [False, True], ids=["fp32", "scaler"])
def test_grad_clip_takes_effect_on_the_fp32_and_the_scaler_path(scaler):
    import copy
    from pathlib import Path
    from specc.training.data import load_data
    from specc.training.loop import Loop, Parts, Where
    clip, lr = 0.05, 0.5
    spec = specc.load(ROOT / "specs/mlp2_zigzag.yaml", ["hidden=8", "train.data.synthetic.samples=96",
                                                        "train.batch_size=32", f"train.grad_clip={clip}"])
    cfg = spec.train
    data = load_data(cfg.data, spec, cfg.task, 1, cfg.seed)
    model = specc.build(spec)
    by_hand = copy.deepcopy(model)
    loss = torch.nn.MSELoss()
    parts = Parts(model, model, loss, torch.optim.SGD(model.parameters(), lr=lr),
                  scaler=torch.amp.GradScaler("cpu") if scaler else None)
    Loop(parts, Where(cfg, data, torch.device("cpu"), Path("/nonexistent"), spec.model_hash)).train_epoch(1)
    # the same epoch by hand: the loop's order, then each gradient scaled to norm `clip` when longer
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed + 1))
    x, y = data.train.samples.inputs[0], data.train.samples.target
    clipped = 0
    for s in range(0, len(order), cfg.batch_size):
        idx = order[s:s + cfg.batch_size]
        by_hand.zero_grad()
        loss(by_hand(x[idx]), y[idx]).backward()
        grads = [p.grad for p in by_hand.parameters()]
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        scale = min(1.0, clip / (norm + 1e-6))
        clipped += scale < 1
        with torch.no_grad():
            for p, g in zip(by_hand.parameters(), grads):
                p -= lr * g * scale
    assert clipped == 3  # every step was clipped: the test means something
    for a, b in zip(model.parameters(), by_hand.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


# --- 6: variant verdicts say when a variant is slower; int8 keeps what measures best ---------------------------

def test_a_slower_variant_is_said_plainly_with_speed_read_one_way():
    from exporters.parity import Check
    from exporters.variants import speed_verdict
    c = Check(0, 0, 0, {}, 0, 0, True, format="onnx-int8", sizes={}, shapes={}, kind="metric",
              size_mb={"fp32": 1.0, "variant": 0.3, "ratio": 0.3},
              latency_ms={"speed": {"batch=1": 0.22, "batch=32": 0.05}})
    assert speed_verdict(c) == ("onnx-int8 is SLOWER than fp32 (×0.22 the speed of fp32 at batch=1, ×0.05 the speed "
                                "of fp32 at batch=32): int8 does not pay off on this model here; it is 0.30× the size")
    c.latency_ms = {"speed": {"batch=1": 1.8, "batch=32": 0.9}}
    assert speed_verdict(c).startswith("onnx-int8 is slower than fp32 at some sizes (×1.80 the speed of fp32 at batch=1")
    c.latency_ms = {"speed": {"batch=1": 1.8, "batch=32": 2.5}}
    assert speed_verdict(c) == ""


def test_int8_of_a_conv_net_measures_its_candidates_and_keeps_one(tmp_path):
    _pictures(tmp_path / "pics", ["a", "b"], per_class=5)
    spec = _image_spec(tmp_path, 2)
    spec.write_text(spec.read_text().replace("  - {op: flatten, start_dim: 1}", "  - {op: Conv2d, out_channels: 4, "
                                             "kernel_size: 3, padding: 1}\n  - ReLU\n  - {op: flatten, start_dim: 1}"))
    run = specc.train(spec, progress=False, out=tmp_path / "cnn").run_dir
    r = invoke("export", run, "--onnx", "--quantize", "int8")
    assert r.returncode == 0, r.stdout + r.stderr
    export = run / "export"
    assert sorted(p.name for p in export.iterdir()) == ["model.int8.onnx", "model.onnx", "parity.json", "parity.md"]
    rep = json.loads((export / "parity.json").read_text())
    int8 = next(c for c in rep["checks"] if c["format"] == "onnx-int8")
    notes = next(a for a in rep["artifacts"] if a["format"] == "onnx-int8")["notes"]
    assert "static int8 calibrated on 2 validation samples" in notes
    assert any(n.startswith("int8 kept: ") and "(of 3 measured" in n for n in notes), notes
    speed = int8["latency_ms"]["speed"]
    assert set(speed) == {"batch=1", "batch=32"}
    for size, v in speed.items():
        assert v == round(int8["latency_ms"]["fp32"][size] / int8["latency_ms"]["variant"][size], 4)
    slower = any(v < 1 for v in speed.values())
    assert ("onnx-int8 is SLOWER than fp32" in r.stdout or "slower than fp32 at some sizes" in r.stdout) == slower
    assert ("than fp32 (" in (export / "parity.md").read_text() or "sizes (" in (export / "parity.md").read_text()) \
        == slower


def test_a_run_stopped_part_way_is_called_so(tmp_path):
    import os
    import signal
    import threading
    import time
    from specc.training.errors import Interrupted
    run = tmp_path / "run"

    def stop_when_training():  # SIGINT once the first epoch is logged: the loop stops at a step boundary
        deadline = time.monotonic() + 120
        while not (run / "metrics.csv").is_file() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=stop_when_training, daemon=True).start()
    with pytest.raises(Interrupted):
        specc.train(ROOT / "specs/mlp2_zigzag.yaml", ["train.epochs=100000"], progress=False, out=run)
    r = invoke("train", ROOT / "specs/mlp2_zigzag.yaml", "--set", "train.epochs=100000", "--out", run)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"{run}: error: this run was stopped part-way (its last checkpoint is epoch-")
    assert lines[1] == "hint: pass --resume to continue it, or --force to start it over"
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1), np.float32))
    p = invoke("predict", run, "--data", tmp_path / "x.npz")
    assert p.returncode == 2 and "this run was stopped part-way" in p.stderr
    assert p.stderr.splitlines()[-1] == f"hint: finish it first: specc train {run} --resume"
