"""Faults: SIGKILL at 50 moments (half of them inside checkpoint writes), a full disk or file-size
limit during checkpoints and exports, concurrent trainers, killed exports, missing runtimes."""
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, invoke
from tests.reliability import faults

TRAIN = ROOT / "tests/cases/train"


@pytest.mark.slow
def test_sigkill_at_50_moments_loses_nothing_and_resume_is_bit_exact(tmp_path):
    stats = faults.kill_and_resume(tmp_path, kills=50)
    assert stats.kills == 50, stats.notes
    assert stats.inside_writes >= 25  # every other kill waits for a checkpoint write to be under way
    assert stats.corrupt == 0
    assert stats.lost == 0
    assert stats.exact


def _limited(limit_bytes):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return pre


def _cli_limited(args, cwd, limit):
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "specc", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, preexec_fn=_limited(limit), timeout=300)


def test_file_size_limit_during_a_checkpoint_keeps_the_previous_one(tmp_path):
    assert invoke("train", TRAIN / "kill.yaml", "--epochs", "2", cwd=tmp_path).returncode == 0
    run = tmp_path / "runs/kill"
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    r = _cli_limited(["train", run, "--resume", "--epochs", "4"], tmp_path, 1_000_000)  # a checkpoint is ~13 MB
    assert r.returncode == 1, r.stderr
    assert "cannot write" in r.stderr and "File too large" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # intact, no temp files
    from specc.training import checkpoint
    path, state = checkpoint.latest(run / "checkpoints", None)
    assert state["epoch"] == 2
    # and the run goes on once there is room
    assert invoke("train", run, "--resume", "--epochs", "3", cwd=tmp_path).returncode == 0


def test_file_size_limit_during_an_export_leaves_no_artifact(tmp_path):
    assert invoke("build", TRAIN / "kill.yaml", "-q", cwd=tmp_path).returncode == 0
    r = _cli_limited(["export", "--onnx"], tmp_path, 2_000_000)  # the ONNX file is ~4.5 MB
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cannot write" in r.stderr and "Traceback" not in r.stderr
    export = tmp_path / "runs/kill/export"
    assert not (export / "model.onnx").exists()
    left = [p.name for p in export.iterdir()] if export.exists() else []
    assert [n for n in left if "partial" in n or n.startswith("model.onnx")] == []


def test_an_export_killed_midway_leaves_nothing_that_looks_valid(tmp_path):
    assert invoke("build", TRAIN / "kill.yaml", "-q", cwd=tmp_path).returncode == 0
    export = tmp_path / "runs/kill/export"
    proc = subprocess.Popen([sys.executable, "-m", "specc", "export", "--onnx"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(export.parent.glob(".export.partial-*/.model.partial-*")):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not export.exists()  # an export is staged beside export/, which appears only when it is complete
    left = [p.name for p in export.parent.iterdir() if "export" in p.name]
    assert all(name.startswith(".export.partial-") for name in left), left  # never under the artifact's name
    r = invoke("export", "--onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in export.iterdir()) == ["model.onnx", "parity.json", "parity.md"]
    assert [p.name for p in export.parent.iterdir() if "export" in p.name] == ["export"]  # the leftovers cleared


def test_an_opset_below_what_an_op_needs(tmp_path):
    spec = tmp_path / "rms.yaml"
    spec.write_text("specc: 1\nname: rms\ninputs: {x: [batch, 8]}\nlayers:\n  - {name: norm, op: RMSNorm}\n")
    r = invoke("export", spec, "--onnx", "--opset", "14", cwd=tmp_path)
    assert r.returncode == 2
    assert "'aten::rms_norm' to ONNX opset version 14 is not supported (node 'norm' at" in r.stderr
    assert "try a higher --opset" in r.stderr
    assert not (tmp_path / "runs/rms/export/model.onnx").exists()
    assert invoke("export", spec, "--onnx", "--opset", "18", cwd=tmp_path).returncode == 0
