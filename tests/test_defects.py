"""Defects found on real data (issue 20): each test fails on the code before its fix."""
import json

import numpy as np
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
