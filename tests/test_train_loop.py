"""The loop for real work: a SIGTERM mid-epoch and an exact resume from it, checkpoints that hold
state and not history, metrics.csv appended and rewound, NaN named at its step without a sync per
step, sequence and per-pixel targets, the early output/target check, compiled training, and the
friction fixes (--out, eject from a trained run, resume after an edit, -q)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import specc
from conftest import ROOT, invoke
from specc.training.checkpoint import from_bytes, listing

TRAIN = ROOT / "tests/cases/train"
TIMING = ("seconds", "samples_per_s")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is faster, and a subprocess can match it exactly
    yield tmp_path
    torch.set_num_threads(threads)


def weights_equal(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def metric_rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


# --- stopping and resuming ----------------------------------------------------------------------

def test_sigterm_mid_epoch_checkpoints_there_and_resume_is_bit_exact(in_tmp):
    spec = TRAIN / "sigterm.yaml"
    full = specc.train(spec, progress=False, out=in_tmp / "full")
    run = in_tmp / "stopped"
    env = dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "specc", "train", str(spec), "--out", str(run)], cwd=in_tmp,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # printed when epoch 1 (and its checkpoint) is done
    assert first.startswith("[1/3]"), first + proc.stderr.read()
    time.sleep(0.2)  # well inside epoch 2 (2,250 steps, about a second)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    names = [p.name for _, p in listing(run / "checkpoints")]
    assert names[0] == "epoch-000001.safetensors" and len(names) == 2, names
    mid = names[1]
    assert mid.startswith("epoch-000001+") and mid.endswith(".safetensors"), names
    batches = int(mid[len("epoch-000001+"):-len(".safetensors")])
    assert 0 < batches < 2250 and batches % 2 == 0  # at an optimizer step: accumulate is 2
    assert err.splitlines() == [
        f"stopped by SIGTERM after {batches} batches of epoch 2; the checkpoint is {run}/checkpoints/{mid}",
        "hint: continue with specc train RUN --resume"]
    assert len(metric_rows(run)) == 1

    resumed = specc.train(run, resume=True, progress=False)
    assert resumed.epochs == 3
    assert weights_equal(full.run_dir, run)
    assert metric_rows(run) == metric_rows(full.run_dir)  # epoch 2's sums continued from the checkpoint


def _checkpoint_state(path):
    return from_bytes(path.read_bytes(), str(path), None)


def test_checkpoints_hold_state_not_history_and_metrics_are_rewound_on_resume(in_tmp):
    spec = TRAIN / "blobs_dropout.yaml"
    base = ["train.epochs=6", "train.data.synthetic.samples=1200", "train.checkpoint.min_interval_s=3600"]
    full = specc.train(spec, base, progress=False, out=in_tmp / "full")
    ckpts = listing(full.run_dir / "checkpoints")
    # the 10 s floor (here an hour): the first epoch and the last, never the ones between
    assert [e for e, _ in ckpts] == [1, 6]
    first, last = (_checkpoint_state(p) for _, p in ckpts)
    assert set(first) == set(last) == {"epoch", "batches", "global_step", "best", "bad_epochs", "model", "optimizer",
                                        "scheduler", "scaler", "rng", "meter", "epoch_lr", "best_epoch",
                                        "best_weights"}
    assert abs(ckpts[0][1].stat().st_size - ckpts[1][1].stat().st_size) < 64  # no history grows in them

    # a crash after epoch 6 but before its checkpoint: metrics.csv has 6 rows, the newest checkpoint is epoch 1
    part = specc.train(spec, base, progress=False, out=in_tmp / "part")
    (part.run_dir / "checkpoints/epoch-000006.safetensors").unlink()
    assert len(metric_rows(part.run_dir)) == 6
    resumed = specc.train(part.run_dir, resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert metric_rows(part.run_dir) == metric_rows(full.run_dir)  # rows 2-6 dropped, then written again once
    assert weights_equal(full.run_dir, part.run_dir)


def test_every_and_keep(in_tmp):
    result = specc.train(TRAIN / "blobs_dropout.yaml", ["train.epochs=7", "train.data.synthetic.samples=600",
                         "train.checkpoint={every: 2, min_interval_s: 0, keep: 2}"], progress=False)
    assert [e for e, _ in listing(result.run_dir / "checkpoints")] == [6, 7]  # 2, 4, 6, and the end; keep 2


# --- NaN without a host sync per step ----------------------------------------------------------

def test_a_nan_names_its_epoch_and_step(in_tmp):
    r = invoke("train", TRAIN / "diverge.yaml")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "error: training diverged: loss became inf at epoch 31, step 1 (global step 30); the last good checkpoint "
        "is runs/diverge/checkpoints/epoch-000030.safetensors"]


@pytest.mark.parametrize("log_every", [1, 50])
def test_a_nan_read_later_still_names_the_exact_step(in_tmp, log_every):
    """Batch size 1: 8 steps an epoch. Read every step or every 50, the same step is named."""
    with pytest.raises(specc.TrainingDiverged) as info:
        specc.train(TRAIN / "diverge.yaml", ["train.batch_size=1", "train.optimizer.lr=0.04",
                                             f"train.log_every={log_every}"], progress=False)
    e = info.value
    assert (e.epoch, e.step, e.global_step) == (8, 3, 58)  # 7 epochs of 8 updates, then 2


# --- where output meets target -------------------------------------------------------------------

def test_per_pixel_targets_train_with_accuracy_per_pixel(in_tmp):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(256, 1, 8, 8)).astype(np.float32)
    np.savez(in_tmp / "masks.npz", x=x, y=(x[:, 0] > 0.5).astype(np.int64))  # y: [batch, H, W] class per pixel
    spec = in_tmp / "seg.yaml"
    spec.write_text("""specc: 1
name: seg
inputs:
  x: [batch, 1, 8, 8]
layers:
  - {name: logits, op: Conv2d, out_channels: 2, kernel_size: 1}
train:
  data: {npz: masks.npz, val_split: 0.25}
  loss: CrossEntropyLoss
  optimizer: {name: Adam, lr: 0.1}
  epochs: 8
  batch_size: 32
""")
    result = specc.train(spec, progress=False)
    assert result.final["val_accuracy"] > 0.97  # of 64 * 64 pixels; a threshold, learnable by a 1x1 conv
    assert result.final["val_loss"] < 0.3


def _mismatch_spec(tmp):
    spec = tmp / "seq.yaml"
    spec.write_text("""specc: 1
name: seq
inputs:
  x: [batch, 16, 8]
layers:
  - {op: Linear, out_features: 32}
  - ReLU
  - {name: classifier, op: Linear, out_features: 4}
train:
  data: {synthetic: {name: sequences, samples: 64, classes: 4}}
  loss: CrossEntropyLoss
  optimizer: {name: Adam, lr: 0.01}
""")
    return spec


def test_an_output_that_cannot_meet_its_target_fails_build_and_train_before_training(in_tmp):
    spec = _mismatch_spec(in_tmp)
    expected = [
        f"{spec}:8:5: error: the output 'classifier' (batch, 16, 4) cannot meet the target (batch,) in the loss: "
        "CrossEntropyLoss takes class scores with one more dim than the class-index target",
        "      - {name: classifier, op: Linear, out_features: 4}",
        "        ^",
        "hint: the scores of each sample (or token, or pixel) go in the last dim; a classifier may need a flatten "
        "before its last Linear"]
    build = invoke("build", spec)
    assert build.returncode == 2 and build.stderr.splitlines() == expected
    train = invoke("train", spec)
    assert train.returncode == 2 and train.stderr.splitlines() == expected and train.stdout == ""
    assert not (in_tmp / "runs/seq").exists()


def test_a_per_pixel_target_read_from_npz_is_checked_before_training(in_tmp):
    np.savez(in_tmp / "m.npz", x=np.zeros((8, 1, 8, 8), np.float32), y=np.zeros((8, 4, 4), np.int64))
    spec = in_tmp / "seg.yaml"
    spec.write_text("specc: 1\nname: seg\ninputs:\n  x: [batch, 1, 8, 8]\nlayers:\n"
                    "  - {name: logits, op: Conv2d, out_channels: 2, kernel_size: 1}\n"
                    "train:\n  data: {npz: m.npz}\n  loss: CrossEntropyLoss\n  optimizer: {name: SGD, lr: 0.1}\n")
    r = invoke("train", spec)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == (f"{spec}:6:5: error: the output 'logits' (batch, 2, 8, 8) cannot meet the "
                                        "target (batch, 4, 4) in the loss: CrossEntropyLoss takes class scores with "
                                        "one more dim than the class-index target")
    assert not (in_tmp / "runs/seg/metrics.csv").exists()


# --- compiled training ---------------------------------------------------------------------------

def test_compiled_training_resumes_exactly(in_tmp):
    from torch._dynamo.utils import counters
    spec = TRAIN / "blobs_dropout.yaml"
    small = ["train.data.synthetic.samples=640", "train.data.val_split=0.2", "train.batch_size=64"]  # no short batch
    graphs = counters["stats"]["unique_graphs"]
    r = invoke("train", spec, "--compile", "--epochs", "3", "--out", in_tmp / "full", *sum((["--set", s] for s in small), []))
    assert r.returncode == 0, r.stderr
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo captured the step
    part = specc.train(spec, small, compile=True, epochs=2, progress=False, out=in_tmp / "part")
    assert part.epochs == 2
    specc.train(part.run_dir, compile=True, epochs=3, resume=True, progress=False)
    assert weights_equal(in_tmp / "full", part.run_dir)
    eager = specc.train(spec, small, epochs=3, progress=False, out=in_tmp / "eager")
    assert eager.final["val_accuracy"] == pytest.approx(json.loads(
        (in_tmp / "full/summary.json").read_text())["trained"]["final"]["val_accuracy"], abs=0.1)


# --- friction ------------------------------------------------------------------------------------

def test_train_out_and_quiet(in_tmp):
    r = invoke("train", ROOT / "specs/mlp2_zigzag.yaml", "--epochs", "2", "--out", in_tmp / "mine", "-q")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert len(metric_rows(in_tmp / "mine")) == 2 and not (in_tmp / "runs").exists()
    r = invoke("train", in_tmp / "mine", "--out", in_tmp / "other")
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == "--out: error: --out picks the folder for a spec's run; TARGET is a run already"


def test_eject_and_draw_a_trained_run_without_rebuilding_it(in_tmp):
    specc.train(ROOT / "specs/mlp2_zigzag.yaml", epochs=3, progress=False, out=in_tmp / "run")
    run = in_tmp / "run"
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = invoke("build", run, "--emit-python", in_tmp / "model.py", "--graph", in_tmp / "model.dot", "-q")
    assert r.returncode == 0, r.stderr
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # the run is as it was
    assert (in_tmp / "model.dot").read_text().startswith("digraph")
    namespace = {}
    exec(compile((in_tmp / "model.py").read_text(), "model.py", "exec"), namespace)
    ejected = namespace["SeedMlp2Zigzag"]().eval()
    ejected.load_state_dict(load_file(run / "model.safetensors"))
    x = torch.linspace(-1, 1, 9)[:, None]
    trained = specc.api.compiled_run(run).module.eval()
    initial = specc.build(ROOT / "specs/mlp2_zigzag.yaml").eval()
    with torch.no_grad():
        assert torch.equal(ejected(x), trained(x))
        assert not torch.allclose(trained(x), initial(x))  # the run's trained weights, not a fresh build's


def test_resuming_after_the_spec_file_changed_says_so(in_tmp):
    spec = in_tmp / "zig.yaml"
    spec.write_text((ROOT / "specs/mlp2_zigzag.yaml").read_text())
    assert invoke("train", spec, "--epochs", "1", "-q").returncode == 0
    spec.write_text(spec.read_text().replace("params: {hidden: 64}", "params: {hidden: 32}"))
    r = invoke("train", spec, "--resume", "--epochs", "2")
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == (f"runs/seed-mlp2-zigzag: error: the model in {spec} has changed since this "
                                        "run was trained")
    r = invoke("train", spec, "--resume", "--epochs", "2", "--set", "train.optimizer.lr=0.001")
    assert r.stderr.splitlines()[0] == (f"runs/seed-mlp2-zigzag: error: the model in {spec} has changed since this "
                                        "run was trained")  # the file did it, not the override
    spec.write_text(spec.read_text().replace("params: {hidden: 32}", "params: {hidden: 64}"))
    r = invoke("train", spec, "--resume", "--epochs", "2", "--set", "hidden=16")
    assert r.stderr.splitlines()[0] == "runs/seed-mlp2-zigzag: error: the overrides change the model of a run being resumed"
    spec.write_text(spec.read_text().replace("lr: 0.01", "lr: 0.005"))
    r = invoke("train", spec, "--resume", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"note: the train settings in {spec} changed since the last run; "
                                     "resuming with the new ones (optimizer)"]
    assert "lr: 0.005" in (in_tmp / "runs/seed-mlp2-zigzag/spec.yaml").read_text()


@pytest.mark.parametrize("override,lines", [
    ("train.epochs=abc", ["--set:1:14: error: epochs must be an integer ≥ 1, got 'abc'", "    train.epochs=abc",
                          "                 ^", "hint: epochs: 1"]),
    ("hiddden=3", ["--set:1:1: error: unknown param 'hiddden'", "    hiddden=3", "    ^", "hint: did you mean 'hidden'?"]),
])
def test_a_bad_set_value_is_reported_against_set(in_tmp, override, lines):
    r = invoke("train", ROOT / "specs/mlp2_zigzag.yaml", "--set", override)
    assert r.returncode == 2 and r.stderr.splitlines() == lines
