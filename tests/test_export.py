"""Exporters and parity: every spec to every format, declared shapes, dynamic time axes, the
dynamo-to-legacy fallback and located failures, deployment variants checked on the task metric,
quiet consoles, file modes, tampered artifacts and bad flags. Real onnx and onnxruntime throughout."""
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

import specc
from conftest import ROOT, SPEC_CASES, case_id, invoke, run_cli

CORPUS = ROOT / "tests/export_corpus"
TRAIN = ROOT / "tests/cases/train"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _dims(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _declared(model: onnx.ModelProto) -> dict[str, list]:
    return {v.name: _dims(v) for v in list(model.graph.input) + list(model.graph.output)}


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# --- every spec ----------------------------------------------------------------------------------

SLOW_CASES = {"zoo-mobilenet_v2", "zoo-yolov8"}  # ~20 s and more of exports on two cores


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if case_id(c) in SLOW_CASES else c
                                  for c in SPEC_CASES], ids=case_id)
def test_every_spec_exports_to_every_file_format_and_passes(case):
    path, params = case
    run = specc.build_run(path, params).run_dir
    report = specc.export(run, ("onnx", "torchscript", "pt2"), latency=False, out=lambda s: None)
    assert [c for c in report.checks if not c.passed] == [] and report.errors == []
    assert {c.format for c in report.checks} == {"onnx", "torchscript", "pt2"}
    assert any(c.sizes.get("batch") == 1 for c in report.checks)
    assert len({tuple(sorted(c.sizes.items())) for c in report.checks}) >= 2
    assert {d["format"]: d["passed"] for d in report.declared_shapes} == {"onnx": True, "pt2": True}
    assert report.passed is True
    assert {a["format"]: a.get("method") for a in report.artifacts}["onnx"] == "dynamo"  # no legacy fallback
    assert json.loads((run / "export/parity.json").read_text())["passed"] is True


# --- declared shapes -----------------------------------------------------------------------------

def test_an_lstm_tagger_declares_its_output_with_the_symbolic_steps_axis():
    """torch.onnx writes the tagger's output as [batch, 4, 6] (4: the trace size of steps); the graph
    does not pin it, so the declaration is repaired from the spec, and the sweep runs it at every size."""
    path = CORPUS / "lstm_tagger.yaml"
    report = specc.export(path, ("onnx", "pt2"), latency=False, out=lambda s: None)
    assert report.passed, report.errors
    model = onnx.load("runs/corpus-lstm-tagger/export/model.onnx")
    assert _declared(model) == {"frames": ["batch", "steps", 12], "tags": ["batch", "steps", 6]}
    onnx_check = next(d for d in report.declared_shapes if d["format"] == "onnx")
    tags = next(v for v in onnx_check["values"] if v["name"] == "tags")
    assert tags["declared"] == ["batch", 4, 6] and tags["expected"] == ["batch", "steps", 6]
    assert tags["repaired"] is True and tags["passed"] is True
    assert {c.sizes["steps"] for c in report.checks if c.format == "onnx"} == {1, 4, 11}
    saved = json.loads(Path("runs/corpus-lstm-tagger/export/parity.json").read_text())
    assert [d["format"] for d in saved["declared_shapes"]] == ["onnx", "pt2"]
    pt2_check = saved["declared_shapes"][1]
    assert pt2_check["passed"] is True and pt2_check["values"][1]["declared"][1] != "4"  # symbolic in the program
    sess = ort.InferenceSession("runs/corpus-lstm-tagger/export/model.onnx", providers=["CPUExecutionProvider"])
    out = sess.run(None, {"frames": torch.randn(2, 9, 12).numpy()})[0]
    assert out.shape == (2, 9, 6)


def _tiny_onnx(out_dims: list, reshape_to: list | None = None) -> onnx.ModelProto:
    """x [batch, steps, 6] -> Identity (or a Reshape to a constant shape) -> y declared `out_dims`."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "steps", 6])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_dims)
    if reshape_to is None:
        nodes, inits = [helper.make_node("Identity", ["x"], ["y"])], []
    else:
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
        inits = [numpy_helper.from_array(torch.tensor(reshape_to).numpy(), "shape")]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


class _Inp:
    def __init__(self, shape):
        self.shape = shape


def test_declared_shapes_are_repaired_only_where_the_graph_does_not_pin_the_dim():
    from exporters.declared import onnx_shapes
    inputs = {"x": _Inp(("batch", "steps", 6))}
    free = _tiny_onnx(["batch", 2, 6])  # the declaration alone is wrong: repaired
    check = onnx_shapes(free, inputs, {"y": ("batch", "steps", 6)})
    assert check.passed and check.repaired and _dims(free.graph.output[0]) == ["batch", "steps", 6]
    pinned = _tiny_onnx(["batch", 2, 6], reshape_to=[-1, 2, 6])  # the graph itself fixes dim 1
    check = onnx_shapes(pinned, inputs, {"y": ("batch", "steps", 6)})
    assert check.passed is False
    assert check.problems() == ["output 'y' dim 1 ('steps' in the spec) is fixed at 2 in the exported graph"]
    wrong = _tiny_onnx(["batch", "steps", 7])  # a fixed dim that is not the spec's is never repaired
    check = onnx_shapes(wrong, inputs, {"y": ("batch", "steps", 6)})
    assert check.problems() == ["output 'y' dim 2 is 7 in the artifact, the spec says 6"]


def test_a_file_that_declares_a_pinned_dim_fails_verify_naming_the_output_and_dim(in_tmp):
    path = CORPUS / "gru_tagger.yaml"
    assert invoke("export", path, "--onnx").returncode == 0
    file = in_tmp / "runs/corpus-gru-tagger/export/model.onnx"
    model = onnx.load(str(file))
    dim = model.graph.output[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = 2  # what an exporter without the check would have written
    onnx.save(model, str(file))
    r = invoke("export", "runs/corpus-gru-tagger", "--onnx", "--verify")
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("error: onnx: declared shapes: output 'head' is declared ['batch', 2, 3] in the file, the spec has "
            "['batch', 'time', 3]") in r.stderr
    saved = json.loads((file.parent / "parity.json").read_text())
    assert saved["passed"] is False and saved["declared_shapes"][0]["passed"] is False


# --- rewrites, fallback and failures -------------------------------------------------------------

def test_3d_attention_exports_with_dynamo_as_one_head():
    report = specc.export(CORPUS / "sdpa_3d.yaml", ("onnx",), latency=False, out=lambda s: None)
    assert report.passed
    art = report.artifacts[0]
    assert art["method"] == "dynamo"
    assert "'attn': 3-D scaled_dot_product_attention exported as one head of a 4-D call" in art["notes"]


def test_a_node_dynamo_fails_on_falls_back_to_legacy_and_says_why(monkeypatch):
    from exporters import rewrite
    monkeypatch.setitem(rewrite.REWRITES, "onnx", [])  # the 3-D attention now reaches onnxscript as it is
    path = CORPUS / "sdpa_3d.yaml"
    report = specc.export(path, ("onnx",), latency=False, out=lambda s: None)
    assert report.passed
    art = report.artifacts[0]
    assert art["method"] == "legacy"
    assert art["notes"] == [f"the dynamo exporter failed (node 'attn' at {path}:{_line(path, '{name: attn,')}:5): "
                            "only 4D query, key, and value are supported; used the legacy exporter instead"]


def test_when_every_exporter_fails_the_error_is_the_root_cause_at_the_node(in_tmp):
    spec = in_tmp / "rms.yaml"
    spec.write_text("specc: 1\nname: rms\ninputs: {x: [batch, 8]}\nlayers:\n  - {name: norm, op: RMSNorm}\n")
    r = invoke("export", spec, "--onnx", "--opset", "14")
    assert r.returncode == 2
    first = r.stderr.splitlines()[0]
    assert first == (f"{spec}:5:5: error: onnx: Exporting the operator 'aten::rms_norm' to ONNX opset version 14 "
                     f"is not supported (node 'norm' at {spec}:5:5)")
    assert "  - {name: norm, op: RMSNorm}" in r.stderr and "hint: this op has no ONNX form at opset 14" in r.stderr
    assert "\x1b[" not in r.stderr and "step" not in r.stderr and "Traceback" not in r.stderr
    saved = json.loads((in_tmp / "runs/rms/export/parity.json").read_text())
    assert saved["passed"] is False and saved["errors"][0]["line"] == 5
    assert not (in_tmp / "runs/rms/export/model.onnx").exists()


def test_pt2_keeps_gru_time_dynamic_and_refuses_a_plain_rnn_at_its_line(in_tmp):
    gru = specc.export(CORPUS / "gru_tagger.yaml", ("pt2",), latency=False, out=lambda s: None)
    assert gru.passed and {c.sizes["time"] for c in gru.checks} == {1, 6}
    path = CORPUS / "rnn_tagger.yaml"
    r = invoke("export", path, "--pt2", "--onnx")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith(f"{path}:{_line(path, '{name: rnn,')}:5: error: pt2: torch.export cannot keep dim "
                               "'time' dynamic: RNN 'rnn' specializes it to the example size")
    assert "hint: torch.export keeps time dynamic through GRU and LSTM, not RNN" in r.stderr
    assert re.search(r"^onnx .*model\.onnx", r.stdout, re.M) and "│ onnx " in r.stdout  # still produced and checked


# --- deployment variants -------------------------------------------------------------------------

def test_an_int8_trained_classifier_keeps_its_accuracy(in_tmp):
    result = specc.train(TRAIN / "blobs_dropout.yaml", epochs=2, progress=False)
    run = result.run_dir
    r = invoke("export", run, "--onnx", "--quantize", "int8", "--fp16", "--optimize", "O2")
    assert r.returncode == 0, r.stdout + r.stderr
    export = run / "export"
    saved = json.loads((export / "parity.json").read_text())
    assert saved["passed"] is True
    metric = {c["format"]: c for c in saved["checks"] if c["kind"] == "metric"}
    assert set(metric) == {"onnx-int8", "onnx-fp16", "onnx-O2"}
    int8 = metric["onnx-int8"]
    assert int8["metric"]["name"] == "accuracy" and int8["metric"]["on"] == "validation split (1200 samples)"
    assert int8["metric"]["reference"] > 0.8  # trained: the metric means something
    assert abs(int8["metric"]["reference"] - int8["metric"]["quantized"]) <= 0.01
    assert int8["metric"]["drop"] <= int8["metric"]["max_drop"] == 1.0
    assert int8["size_mb"]["ratio"] < 0.6  # int8 weights: well under the fp32 file
    assert set(int8["latency_ms"]["speed"]) == {"batch=1", "batch=32"}
    model = onnx.load(str(export / "model.int8.onnx"))
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in model.graph.node}
    assert {p.key: p.value for p in model.metadata_props}["specc.parity"] == "passed"
    fp16 = onnx.load(str(export / "model.fp16.onnx"))
    assert onnx.TensorProto.FLOAT16 in {i.data_type for i in fp16.graph.initializer}
    assert (export / "model.O2.onnx").is_file()
    assert "deployment variants" in r.stdout and "onnx-int8" in r.stdout
    assert "Deployment variants" in (export / "parity.md").read_text()


def test_a_regression_variant_is_judged_on_validation_mse(in_tmp):
    run = specc.train(ROOT / "specs/mlp2_zigzag.yaml", epochs=3, progress=False).run_dir
    report = specc.export(run, ("onnx",), quantize="int8", latency=False, out=lambda s: None)
    check = next(c for c in report.checks if c.kind == "metric")
    assert check.metric["name"] == "mse" and check.metric["unit"] == "%"
    drop = (check.metric["quantized"] - check.metric["reference"]) / check.metric["reference"] * 100
    assert check.metric["drop"] == pytest.approx(drop, abs=1e-3)
    assert check.passed is (check.metric["drop"] <= 1.0)


def test_without_a_validation_split_variants_compare_with_fp32_on_seeded_inputs_and_say_so(in_tmp):
    spec = ROOT / "specs/linear_regression.yaml"  # val_split: 0
    r = invoke("export", spec, "--onnx", "--quantize", "int8", "--max-drop", "0")
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("note: the train section has no validation split (val_split: 0); the variants are compared with fp32 on "
            "seeded inputs (relative error), not on a task metric") in r.stdout
    saved = json.loads((in_tmp / "runs/seed-linear-regression/export/parity.json").read_text())
    check = next(c for c in saved["checks"] if c["kind"] == "metric")
    assert check["metric"]["name"] == "relative error vs fp32 (%)" and check["metric"]["on"] == "seeded inputs"
    assert check["metric"]["drop"] > 0 and check["passed"] is False and saved["passed"] is False
    assert f"error: onnx-int8: relative error vs fp32 (%) 0.0 -> {check['metric']['quantized']}" in r.stderr


# --- reports, console, files ---------------------------------------------------------------------

def test_torch_compile_check_and_the_reports(in_tmp):
    r = invoke("export", ROOT / "specs/mlp2_zigzag.yaml", "--all")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "never trained; exporting its initial weights" in r.stdout
    for fmt in ("onnx", "torchscript", "pt2", "compile"):
        assert any(line.startswith(fmt) for line in r.stdout.splitlines())
    assert r.stdout.count("TorchScript is deprecated") == 1
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
    assert _declared(model) == {"x": ["batch", 1], "out": ["batch", 1]}
    assert model.opset_import[0].version == 18
    assert not list(export.glob("*.data")) and not list(export.glob(".*partial*"))
    again = invoke("export", ROOT / "specs/mlp2_zigzag.yaml")  # no flags: the default formats, no compile
    assert again.returncode == 0 and not any(line.startswith("compile") for line in again.stdout.splitlines())


def test_latency_is_measured_where_every_dim_is_smallest_and_largest():
    report = specc.export(CORPUS / "gru_tagger.yaml", ("onnx", "pt2"), out=lambda s: None)
    assert report.passed
    assert {k: set(v) for k, v in report.latency_ms.items()} == {
        k: {"batch=1,time=1", "batch=3,time=6"} for k in ("eager", "onnx", "pt2")}


def test_a_default_export_prints_no_torch_warnings(in_tmp):
    """A new process, so that what native code writes to the terminal is seen too."""
    r = run_cli("export", CORPUS / "lstm_tagger.yaml", cwd=in_tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    noise = [line for line in (r.stdout + r.stderr).splitlines()
             if re.search(r"[Ww]arning|LeafSpec|deprecated|will be removed|^W\d{4}", line) and "TorchScript" not in line]
    assert noise == []
    assert r.stderr == ""
    md = (in_tmp / "runs/corpus-lstm-tagger/export/parity.md").read_text()
    assert "Warnings from torch, onnxscript and onnxruntime (kept off the console):" in md
    assert re.search(r"^- (onnx|pt2|export): \d+ warnings?: ", md, re.M)


def test_artifacts_respect_the_umask(in_tmp):
    old = os.umask(0o027)
    try:
        report = specc.export(ROOT / "specs/mlp2_zigzag.yaml", latency=False, out=lambda s: None)
    finally:
        os.umask(old)
    assert report.passed
    export = in_tmp / "runs/seed-mlp2-zigzag/export"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in export.glob("model.*")}
    assert modes == {"model.onnx": 0o640, "model.pt2": 0o640, "model.torchscript.pt": 0o640}


# --- tampered artifacts, runtimes, flags ---------------------------------------------------------

def test_a_tampered_onnx_file_fails_and_the_report_names_the_node(in_tmp):
    spec = ROOT / "specs/transformer_encoder.yaml"
    assert invoke("export", spec, "--onnx").returncode == 0
    path = in_tmp / "runs/seed-transformer-encoder/export/model.onnx"
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == "layers.1.ffn.bias")
    bias = numpy_helper.to_array(init).copy()
    bias[0] += 0.5  # one element: a uniform shift would vanish in the LayerNorm that follows
    init.CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(model, str(path))
    r = invoke("export", "--onnx", "--verify")
    assert r.returncode == 1, r.stdout + r.stderr
    rep = json.loads((path.parent / "parity.json").read_text())
    assert rep["passed"] is False
    d = rep["divergence"]
    assert d["node"] == "layers.1.ffn" and d["line"] == _line(spec, "name: ffn,") and d["format"] == "onnx"
    assert "first diverging node: layers.1.ffn" in r.stdout
    assert invoke("export", "--onnx", "--verify", "--allow-mismatch").returncode == 0
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["specc.parity"] == "failed"


def test_a_tampered_torchscript_file_names_the_node(in_tmp):
    spec = ROOT / "specs/mlp3_zigzag.yaml"
    assert invoke("export", spec, "--torchscript").returncode == 0
    path = in_tmp / "runs/seed-mlp3-zigzag/export/model.torchscript.pt"
    ts = torch.jit.load(str(path))
    with torch.no_grad():
        ts.linear_1.weight.add_(0.1)
    ts.save(str(path))
    r = invoke("export", "--torchscript", "--verify")
    assert r.returncode == 1
    d = json.loads((path.parent / "parity.json").read_text())["divergence"]
    assert d["node"] == "linear_1" and d["line"] == 12


def test_missing_onnxruntime_is_a_clean_error(in_tmp):
    assert invoke("build", ROOT / "specs/mlp2_zigzag.yaml", "-q").returncode == 0
    code = ("import sys; sys.modules['onnxruntime'] = None; sys.argv = ['specc', 'export', '--onnx'];"
            "from specc.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], cwd=in_tmp, capture_output=True, text=True)
    assert r.returncode == 2
    assert "onnxruntime is not installed" in r.stderr and "pip install onnxruntime" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--opset", "9"], "opset must be an integer from 14"),
    (["--exporter", "magic"], "unknown exporter 'magic'"),
    (["--quantize", "int4"], "--quantize: error: unknown quantization 'int4'"),
    (["--optimize", "O4"], "--optimize: error: unknown optimization level 'O4'"),
    (["--quantize", "int8", "--max-drop", "-1"], "--max-drop: error: --max-drop must be ≥ 0, got -1.0"),
])
def test_bad_export_flags(in_tmp, args, message):
    r = invoke("export", ROOT / "specs/mlp2_zigzag.yaml", "--onnx", *args)
    assert r.returncode == 2 and message in r.stderr


def test_bad_export_section(in_tmp):
    spec = in_tmp / "s.yaml"
    spec.write_text((ROOT / "specs/mlp2_zigzag.yaml").read_text() + "export:\n  formats: [onxx]\n  dims: {btach: [1]}\n")
    r = invoke("export", spec)
    assert r.returncode == 2
    assert "unknown export format 'onxx'" in r.stderr and "did you mean 'onnx'?" in r.stderr
    assert "'btach' is not a symbolic dim" in r.stderr
