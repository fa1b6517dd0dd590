"""Exporters and parity: every spec to every format, dynamic time axes, tampered artifacts, bad weights."""
import json
import subprocess
import sys

import onnx
import pytest
import torch
from onnx import numpy_helper

import specc
from conftest import ROOT, SPECS, run_cli


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_spec_exports_to_every_file_format_and_passes(path):
    report = specc.export(path, ("onnx", "torchscript", "pt2"), latency=False, out=lambda s: None)
    assert report.passed, [c for c in report.checks if not c.passed]
    assert not report.errors
    formats = {c.format for c in report.checks}
    assert formats == {"onnx", "torchscript", "pt2"}
    assert len({tuple(sorted(c.sizes.items())) for c in report.checks}) >= 3  # several sizes, batch 1 among them
    assert any(c.sizes.get("batch") == 1 for c in report.checks)


def test_torch_compile_check_and_the_reports(in_tmp):
    r = run_cli("export", ROOT / "specs/mlp2_zigzag.yaml", "--all", cwd=in_tmp, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "never trained; exporting its initial weights" in r.stdout
    for fmt in ("onnx", "torchscript", "pt2", "compile"):
        assert any(line.startswith(fmt) for line in r.stdout.splitlines())
    assert "TorchScript is deprecated" in r.stdout and r.stdout.count("TorchScript is deprecated") == 1
    assert "[torch.onnx]" not in r.stdout + r.stderr
    export = in_tmp / "runs/seed-mlp2-zigzag/export"
    rep = json.loads((export / "parity.json").read_text())
    assert rep["passed"] is True
    for c in rep["checks"]:
        assert {"format", "shapes", "max_abs_err", "max_rel_err", "passed", "worst", "nan", "inf"} <= set(c)
    assert {c["format"] for c in rep["checks"]} == {"onnx", "torchscript", "pt2", "compile"}
    assert set(rep["latency_ms"]) == {"eager", "onnx", "pt2"}
    assert set(rep["latency_ms"]["onnx"]) == {"batch=1", "batch=32"}
    assert rep["compile_speedup"] > 0
    assert rep["environment"]["opset"] == 18 and rep["environment"]["execution_provider"] == "CPUExecutionProvider"
    assert "| onnx | batch=32 |" in (export / "parity.md").read_text()
    model = onnx.load(str(export / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["specc.parity"] == "passed" and meta["specc.version"] == specc.__version__
    assert meta["specc.spec_hash"] == specc.load(ROOT / "specs/mlp2_zigzag.yaml").hash
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["out"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch stays dynamic
    assert model.opset_import[0].version == 18
    assert not list(export.glob("*.data")) and not list(export.glob(".*partial*"))


SEQ = """
specc: 1
name: seq-{op}
inputs: {{x: [batch, time, 8]}}
layers:
  - {{name: rnn, op: {op}, hidden_size: 12, batch_first: true}}
  - {{name: head, op: Linear, from: rnn.0, out_features: 3}}
"""
MHA = """
specc: 1
name: seq-mha
inputs: {x: [batch, time, 8]}
layers:
  - {name: attn, op: MultiheadAttention, num_heads: 2, batch_first: true}
  - {name: head, op: Linear, from: attn.0, out_features: 3}
"""


@pytest.mark.parametrize("text", [SEQ.format(op="GRU"), SEQ.format(op="LSTM"), MHA], ids=["GRU", "LSTM", "MHA"])
def test_recurrent_and_attention_models_keep_a_dynamic_time_axis(in_tmp, text):
    spec = in_tmp / "seq.yaml"
    spec.write_text(text + "export:\n  dims: {batch: [1, 4], time: [1, 5, 13]}\n")
    report = specc.export(spec, ("onnx", "torchscript"), latency=False, out=lambda s: None)
    assert report.passed
    assert {tuple(c.sizes.values()) for c in report.checks} == {(b, t) for b in (1, 4) for t in (1, 5, 13)}
    model = onnx.load(str(next(in_tmp.glob("runs/*/export/model.onnx"))))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param


def test_pt2_refuses_a_dynamic_time_axis_through_a_gru_cleanly(in_tmp):
    spec = in_tmp / "gru.yaml"
    spec.write_text(SEQ.format(op="GRU"))
    r = run_cli("export", spec, "--pt2", "--onnx", cwd=in_tmp)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "torch.export cannot keep dim 'time' dynamic" in r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr
    assert "onnx" in r.stdout and "pass" in r.stdout  # the other format was still produced and checked


def _spec_line(name: str) -> int:
    text = (ROOT / "specs/transformer_encoder.yaml").read_text().splitlines()
    return next(i for i, line in enumerate(text, 1) if f"name: {name}," in line)


def test_a_tampered_onnx_file_fails_and_the_report_names_the_node(in_tmp):
    spec = ROOT / "specs/transformer_encoder.yaml"
    assert run_cli("export", spec, "--onnx", cwd=in_tmp).returncode == 0
    path = in_tmp / "runs/seed-transformer-encoder/export/model.onnx"
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == "layers.1.ffn.bias")
    bias = numpy_helper.to_array(init).copy()
    bias[0] += 0.5  # one element: a uniform shift would vanish in the LayerNorm that follows
    init.CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(model, str(path))
    r = run_cli("export", "--onnx", "--verify", cwd=in_tmp)
    assert r.returncode == 1, r.stdout + r.stderr
    rep = json.loads((path.parent / "parity.json").read_text())
    assert rep["passed"] is False
    d = rep["divergence"]
    assert d["node"] == "layers.1.ffn" and d["line"] == _spec_line("ffn") and d["format"] == "onnx"
    assert "first diverging node: layers.1.ffn" in r.stdout
    assert run_cli("export", "--onnx", "--verify", "--allow-mismatch", cwd=in_tmp).returncode == 0
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["specc.parity"] == "failed"


def test_a_tampered_torchscript_file_names_the_node(in_tmp):
    spec = ROOT / "specs/mlp3_zigzag.yaml"
    assert run_cli("export", spec, "--torchscript", cwd=in_tmp).returncode == 0
    path = in_tmp / "runs/seed-mlp3-zigzag/export/model.torchscript.pt"
    ts = torch.jit.load(str(path))
    with torch.no_grad():
        ts.linear_1.weight.add_(0.1)
    ts.save(str(path))
    r = run_cli("export", "--torchscript", "--verify", cwd=in_tmp)
    assert r.returncode == 1
    d = json.loads((path.parent / "parity.json").read_text())["divergence"]
    assert d["node"] == "linear_1" and d["line"] == 12


def test_missing_onnxruntime_is_a_clean_error(in_tmp):
    assert run_cli("build", ROOT / "specs/mlp2_zigzag.yaml", "-q", cwd=in_tmp).returncode == 0
    code = ("import sys; sys.modules['onnxruntime'] = None; sys.argv = ['specc', 'export', '--onnx'];"
            "from specc.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], cwd=in_tmp, capture_output=True, text=True)
    assert r.returncode == 2
    assert "onnxruntime is not installed" in r.stderr and "pip install onnxruntime" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--opset", "9"], "opset must be an integer from 14"),
    (["--exporter", "magic"], "unknown exporter 'magic'"),
])
def test_bad_export_flags(in_tmp, args, message):
    r = run_cli("export", ROOT / "specs/mlp2_zigzag.yaml", "--onnx", *args, cwd=in_tmp)
    assert r.returncode == 2 and message in r.stderr


def test_bad_export_section(in_tmp):
    spec = in_tmp / "s.yaml"
    spec.write_text((ROOT / "specs/mlp2_zigzag.yaml").read_text() + "export:\n  formats: [onxx]\n  dims: {btach: [1]}\n")
    r = run_cli("export", spec, cwd=in_tmp)
    assert r.returncode == 2
    assert "unknown export format 'onxx'" in r.stderr and "did you mean 'onnx'?" in r.stderr
    assert "'btach' is not a symbolic dim" in r.stderr
