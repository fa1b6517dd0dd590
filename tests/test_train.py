"""The shared loop: the article's results, checkpoints, exact resume after SIGKILL, locking, faults."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import specc
from conftest import ROOT, invoke, run_cli
from specc.training.errors import TrainingDiverged

TRAIN = ROOT / "tests/cases/train"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_linear_regression_reaches_the_normal_equation():
    result = specc.train(ROOT / "specs/linear_regression.yaml", progress=False)
    w = load_file(result.run_dir / "model.safetensors")
    X = np.array([[120, 5], [180, 2], [150, 1], [210, 2], [105, 1]], float)
    y = np.array([30, 90, 100, 180, 85], float)
    minmax = lambda a: (a - (a.max(0) + a.min(0)) / 2) / ((a.max(0) - a.min(0)) / 2)  # noqa: E731
    A = np.c_[minmax(X), np.ones(5)]
    solution = np.linalg.solve(A.T @ A, A.T @ minmax(y))
    got = np.r_[w["linear.weight"].numpy().ravel(), w["linear.bias"].numpy()]
    assert np.abs(got - solution).max() < 1e-3


def test_two_layer_mlp_learns_the_zigzag():
    result = specc.train(ROOT / "specs/mlp2_zigzag.yaml", progress=False)
    assert result.final["val_loss"] < 1e-3  # the README states the figure reached
    assert result.final["val_r2"] > 0.99


def test_transformer_encoder_classifies_sequences():
    result = specc.train(ROOT / "specs/transformer_encoder.yaml", progress=False)
    assert result.final["val_accuracy"] > 0.9


def test_resnet_block_learns_images_well_above_chance():
    result = specc.train(ROOT / "specs/resnet_block.yaml", progress=False)
    assert result.final["val_accuracy"] > 0.6  # chance is 0.25


def test_run_folder_after_training(in_tmp):
    r = invoke("train", ROOT / "specs/mlp2_zigzag.yaml", "--epochs", "3", cwd=in_tmp)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("[")]
    assert [l.split("]")[0] for l in lines] == ["[1/3", "[2/3", "[3/3"]  # one line per epoch outside a terminal
    run = in_tmp / "runs/seed-mlp2-zigzag"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,loss,mae,r2,val_loss,val_mae,val_r2") and len(rows) == 4
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the first epoch and the last are checkpointed; epoch 2 came sooner than min_interval_s (10 s)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch-000001.safetensors", "epoch-000003.safetensors"]
    trained = load_file(run / "model.safetensors")
    from specc.training.checkpoint import from_bytes
    last = from_bytes((run / "checkpoints/epoch-000003.safetensors").read_bytes(), "x", None)
    assert all(torch.equal(trained[k], last["model"][k]) for k in trained)
    # a trained run is not silently restarted
    again = invoke("train", ROOT / "specs/mlp2_zigzag.yaml", cwd=in_tmp)
    assert again.returncode == 2 and "--resume" in again.stderr


def _weights(path):
    return load_file(path)


def test_nan_loss_stops_with_exit_1_and_keeps_the_last_good_checkpoint(in_tmp):
    r = invoke("train", TRAIN / "diverge.yaml", cwd=in_tmp)
    assert r.returncode == 1
    assert "loss became inf at epoch 31, step 1 (global step 30)" in r.stderr
    assert "checkpoints/epoch-000030.safetensors" in r.stderr
    run = in_tmp / "runs/diverge"
    from specc.training.checkpoint import latest
    path, state = latest(run / "checkpoints", None)
    assert state["epoch"] == 30
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    # model.safetensors still holds the initial weights, not the diverged ones
    assert all(torch.isfinite(t).all() for t in load_file(run / "model.safetensors").values())


def test_diverged_run_raises_in_the_api():
    with pytest.raises(TrainingDiverged) as info:
        specc.train(TRAIN / "diverge.yaml", progress=False)
    assert info.value.epoch == 31 and info.value.step == 1


def test_a_second_trainer_is_refused_and_a_dead_ones_lock_is_recovered(in_tmp):
    assert invoke("build", ROOT / "specs/mlp2_zigzag.yaml", "-q", cwd=in_tmp).returncode == 0
    run = in_tmp / "runs/seed-mlp2-zigzag"
    # another process holds the lock (the lock is re-entrant within one process, so it must be another)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from specc.training.lock import RunLock; from pathlib import Path;"
                               "l = RunLock(Path(sys.argv[2])).__enter__(); print('held', flush=True); time.sleep(60)",
                               str(ROOT), str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert invoke("train", run, "--epochs", "1", cwd=in_tmp).returncode == 2
    holder.kill()
    holder.wait()
    assert (run / ".lock").read_text().strip() == str(holder.pid)  # stale, on disk
    r = invoke("train", run, "--epochs", "1", cwd=in_tmp)
    assert r.returncode == 0, r.stderr
    # --force cannot start over a run that another process is training
    holder = subprocess.Popen(holder.args, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    for args in (("train", ROOT / "specs/mlp2_zigzag.yaml", "--force", "--epochs", "1"),
                 ("build", ROOT / "specs/mlp2_zigzag.yaml", "--force", "-q")):
        r = invoke(*args, cwd=in_tmp)
        assert r.returncode == 2 and f"being trained by pid {holder.pid}" in r.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    holder.kill()
    holder.wait()


def test_latest_run_and_overrides(in_tmp):
    assert invoke("build", ROOT / "specs/mlp3_zigzag.yaml", "-q", cwd=in_tmp).returncode == 0
    r = invoke("train", "--epochs", "2", "--set", "train.optimizer.lr=0.005", cwd=in_tmp)
    assert r.returncode == 0, r.stderr
    assert "trained runs/seed-mlp3-zigzag for 2 epochs" in r.stdout
    assert "lr: 0.005" in (in_tmp / "runs/seed-mlp3-zigzag/spec.yaml").read_text()
    r = invoke("train", "--resume", "--epochs", "3", cwd=in_tmp)
    assert r.returncode == 0 and "[3/3]" in r.stdout and "[2/3]" not in r.stdout
    r = invoke("train", "--resume", "--set", "hidden=8", cwd=in_tmp)
    assert r.returncode == 2 and "change the model of a run being resumed" in r.stderr


def test_device_errors(in_tmp):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = invoke("train", ROOT / "specs/mlp2_zigzag.yaml", "--device", "cuda", cwd=in_tmp)
    assert r.returncode == 2 and "CUDA is not available" in r.stderr


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu(precision):
    result = specc.train(TRAIN / "blobs_dropout.yaml", [f"train.precision={precision}", "train.epochs=2"],
                         progress=False)
    assert np.isfinite(result.final["loss"]) and result.final["val_accuracy"] > 0.4


def test_accumulation_matches_a_bigger_batch():
    base = ["train.epochs=3", "train.data.val_split=0.0", "layers.2.p=0.0", "train.scheduler=null", "train.grad_clip=null",
            "train.optimizer.name=SGD", "train.optimizer.lr=0.1", "train.optimizer.weight_decay=0"]
    big = specc.train(TRAIN / "blobs_dropout.yaml", base + ["train.batch_size=32", "train.accumulate=1"],
                      progress=False, force=True)
    small = specc.train(TRAIN / "blobs_dropout.yaml", base + ["train.batch_size=16", "train.accumulate=2"],
                        progress=False, force=True)
    assert len(big.history) == len(small.history) == 3
    for x, y in zip(big.history, small.history):
        assert abs(x["loss"] - y["loss"]) < 1e-4


def test_early_stopping_and_warmup():
    result = specc.train(TRAIN / "blobs_dropout.yaml", ["train.optimizer.lr=0.0",
                         "train.early_stopping={patience: 2, monitor: val_loss}"], progress=False)
    assert len(result.history) == 3 and result.history[-1].get("stopped_early")
    lrs = [r["lr"] for r in specc.train(TRAIN / "blobs_dropout.yaml", ["train.epochs=5"], progress=False,
                                        force=True).history]
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3]  # linear warm-up over 3 epochs, then StepLR


@pytest.mark.parametrize("override,where,message", [
    ("train.loss=MSELos", "--set:1:12", "unknown loss 'MSELos'"),
    ("train.optimizer.name=Adamw", "--set:1:22", "unknown optimizer 'Adamw'"),
    ("train.optimizer.lrr=1", "--set:1:1", "unknown argument 'lrr' for AdamW"),
    ("train.scheduler.name=torch.optim.lr_scheduler.StepLR", "--set:1:22", "unknown scheduler"),
    ("train.precision=fp8", "--set:1:17", "unknown precision 'fp8'"),
    ("train.data.synthetic.name=spirals", "--set:1:27", "unknown synthetic source 'spirals'"),
    ("train.data.val_split=1.5", "--set:1:22", "val_split must be in [0, 1)"),
    ("train.optimizer.lr=-1", "blobs_dropout.yaml:21:14", "cannot create AdamW: Invalid learning rate: -1"),
])
def test_bad_train_settings_exit_2(in_tmp, override, where, message):
    r = invoke("train", TRAIN / "blobs_dropout.yaml", "--set", override, cwd=in_tmp)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0].split(": error: ")[0].endswith(where), r.stderr


def _csv_spec(tmp_path, csv_text, features="[area, age]", shape="[batch, 2]"):
    (tmp_path / "house.csv").write_text(csv_text)
    spec = tmp_path / "house.yaml"
    spec.write_text(f"specc: 1\nname: house\ninputs:\n  x: {shape}\nlayers:\n  - {{op: Linear, out_features: 1}}\n"
                    f"train:\n  data:\n    csv: house.csv\n    features: {features}\n    target: [price]\n"
                    f"  loss: MSELoss\n  optimizer: {{name: SGD, lr: 0.1}}\n  epochs: 2\n  batch_size: 2\n")
    return spec


def test_csv_data_trains(in_tmp):
    spec = _csv_spec(in_tmp, "area,age,price\n120,5,30\n180,2,90\n150,1,100\n")
    assert invoke("train", spec, cwd=in_tmp).returncode == 0


@pytest.mark.parametrize("csv_text,features,shape,where,message", [
    ("area,age,price\n120,5,30\n", "[area, agee]", "[batch, 2]", "house.yaml:10:15", "column 'agee' is not in"),
    ("area,age,price\n120,5,30\n180,old,90\n", "[area, age]", "[batch, 2]", "house.csv:3:5",
     "non-numeric value 'old' in column 'age'"),
    ("area,age,price\n120,5,30\n", "[area, age]", "[batch, 3]", "house.yaml:9:10", "the spec expects (3)"),
    ("area,age,price\n120,5\n", "[area, age]", "[batch, 2]", "house.csv:2:1", "row has 2 fields"),
])
def test_data_errors_name_the_spec_line_and_the_file(in_tmp, csv_text, features, shape, where, message):
    spec = _csv_spec(in_tmp, csv_text, features, shape)
    r = invoke("train", spec, cwd=in_tmp)
    assert r.returncode == 2, r.stderr
    first = r.stderr.splitlines()[0]
    assert where in first and message in first, r.stderr
    assert "house.csv" in r.stderr and "house.yaml" in r.stderr


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_data_paths_that_are_not_files(in_tmp, kind):
    spec = _csv_spec(in_tmp, "area,age,price\n1,2,3\n")
    (in_tmp / "house.csv").unlink()
    if kind == "directory":
        (in_tmp / "house.csv").mkdir()
    elif kind == "fifo":
        os.mkfifo(in_tmp / "house.csv")
    r = invoke("train", spec, cwd=in_tmp, timeout=60)
    assert r.returncode == 2
    assert {"missing": "does not exist", "directory": "is a directory", "fifo": "not a regular file"}[kind] in r.stderr


def test_npz_with_pickled_objects_is_refused(in_tmp):
    np.savez(in_tmp / "d.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    spec = in_tmp / "s.yaml"
    spec.write_text("specc: 1\nname: s\ninputs: {x: [batch, 1]}\nlayers: [{op: Linear, out_features: 1}]\n"
                    "train:\n  data: {npz: d.npz}\n  loss: MSELoss\n  optimizer: {name: SGD, lr: 0.1}\n")
    r = invoke("train", spec, cwd=in_tmp)
    assert r.returncode == 2 and "pickled objects" in r.stderr


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_at_twice_the_batch(in_tmp):
    common = ["--set", "train.epochs=3", "--set", "layers.2.p=0.0", "--set", "train.accumulate=1"]
    (in_tmp / "one").mkdir(), (in_tmp / "two").mkdir()
    one = invoke("train", TRAIN / "blobs_dropout.yaml", *common, "--set", "train.batch_size=32", cwd=in_tmp / "one")
    assert one.returncode == 0, one.stderr
    two = run_cli("train", TRAIN / "blobs_dropout.yaml", *common, "--set", "train.batch_size=16", "--nproc", "2",
                  cwd=in_tmp / "two", timeout=600)
    assert two.returncode == 0, two.stderr + two.stdout
    import csv
    a = list(csv.DictReader(open(in_tmp / "one/runs/blobs-dropout/metrics.csv")))
    b = list(csv.DictReader(open(in_tmp / "two/runs/blobs-dropout/metrics.csv")))
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):  # the same global batches, gradients averaged over 2 ranks: float noise only
        assert abs(float(x["loss"]) - float(y["loss"])) < 1e-3
        assert abs(float(x["val_loss"]) - float(y["val_loss"])) < 1e-3


@pytest.mark.slow
def test_progress_bar_in_a_terminal(in_tmp):
    """In a terminal the trainer draws a rich progress bar with the loss and samples/s."""
    import pty
    master, slave = pty.openpty()
    env = dict(os.environ, COLUMNS="120", TERM="xterm")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "specc", "train", str(ROOT / "specs/mlp2_zigzag.yaml"),
                             "--epochs", "2"], cwd=in_tmp, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    assert "epoch 2/2" in out and "samples/s" in out and "loss" in out
    assert "[1/2]" not in out  # the line-per-epoch format is for pipes only


def test_tensorboard_without_the_package_is_a_clean_error(in_tmp):
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    r = invoke("train", ROOT / "specs/mlp2_zigzag.yaml", "--epochs", "1", "--tensorboard", cwd=in_tmp)
    assert r.returncode == 2 and "needs the tensorboard package" in r.stderr and "pip install tensorboard" in r.stderr
