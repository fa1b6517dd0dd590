"""Regression tests for the defects issue 9 found, and the structure rules that keep them fixed."""
import ast
import json
import subprocess
import sys

import pytest

import specc
from conftest import ROOT, invoke

GRU_RESHAPE = """specc: 1
name: back
inputs: {x: [batch, time, 4]}
layers:
  - {name: gru, op: GRU, hidden_size: 6, batch_first: true}
  - {name: flat, op: flatten, from: gru.0, start_dim: 1}
  - {name: back, op: reshape, shape: [batch, time, 6]}
"""


def test_param_expressions_work_in_train(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("specc: 1\nname: p\nparams: {lr: 0.05, epochs: 3, bs: 4}\ninputs: {x: [batch, 2]}\n"
                    "layers: [{op: Linear, out_features: 1}]\n"
                    "train:\n  data: {inline: {a: [1, 2, 3, 4], b: [2, 1, 4, 3], y: [3, 3, 7, 7]}}\n"
                    "  loss: MSELoss\n  optimizer: {name: SGD, lr: $lr, momentum: '${lr * 2}'}\n"
                    "  epochs: $epochs\n  batch_size: $bs\n")
    cfg = specc.load(spec).train
    assert cfg.optimizer.kwargs == {"lr": 0.05, "momentum": 0.1}
    assert (cfg.epochs, cfg.batch_size) == (3, 4)
    assert specc.load(spec, {"lr": 0.2}).train.optimizer.kwargs["lr"] == 0.2


def test_train_section_errors_are_found_at_build(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("specc: 1\nname: p\ninputs: {x: [batch, 2]}\nlayers: [{op: Linear, out_features: 1}]\n"
                    "train:\n  data: {inline: {a: [1, 2], y: [3, 3]}}\n  loss: MSELos\n  optimizer: {name: SGD, lrr: 1}\n")
    r = invoke("build", spec, "-q", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0] == f"{spec}:7:9: error: unknown loss 'MSELos'"
    assert f"{spec}:8:26: error: unknown argument 'lrr' for SGD" in lines
    assert not (tmp_path / "runs").exists()


def test_eject_agrees_with_lowering_on_reshape_dims(tmp_path):
    spec = tmp_path / "back.yaml"
    spec.write_text(GRU_RESHAPE)
    compiled = specc.api.compiled(spec)
    out = specc.api.emit_python(compiled, tmp_path / "back.py")
    namespace: dict = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)  # noqa: S102 - the file specc just wrote
    model = namespace["Back"]().eval()
    model.load_state_dict(compiled.module.state_dict(), strict=True)
    import torch
    x = torch.randn(3, 7, 4)
    with torch.no_grad():
        assert torch.equal(model(x), compiled.module.eval()(x))
    assert "x.size(1), 6]" in out.read_text()  # time is read from the block input that carries it, as lowering does


def test_a_reshape_dim_no_value_in_scope_carries_is_a_build_error(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("specc: 1\nname: s\ninputs: {x: [batch, time, 4]}\nblocks:\n  b:\n    layers:\n"
                    "      - {op: reshape, shape: [batch, time, 2]}\n"
                    "layers:\n  - {op: mean, dim: 1}\n  - {op: Linear, out_features: 8}\n  - {block: b}\n")
    with pytest.raises(specc.SpecError) as info:
        specc.build(spec)
    d = info.value.diagnostics[0]
    assert (d.line, d.col) == (7, 30)  # the shape: list that names it
    assert d.message == "reshape 'b.reshape' names dim 'time', which neither its input nor its block's inputs carry"


def test_a_typo_is_reported_without_importing_torch(tmp_path):
    spec = tmp_path / "typo.yaml"
    spec.write_text("specc: 1\nname: t\ninputs: {x: [batch, 4]}\nlayers:\n  - {op: Lienar, out_features: 2}\n")
    code = ("import sys\nfrom specc.cli import main\nsys.argv = ['specc', 'build', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, cwd=tmp_path)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert r.stderr.startswith(f"{spec}:5:10: error: unknown op 'Lienar'")


def test_a_closed_stdout_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "specc", "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as `| head -1` does
    err = proc.stderr.read().decode()
    assert first.startswith(b"{") and proc.wait(timeout=60) == 141
    assert err == ""


def test_nothing_below_the_cli_imports_the_facade():
    offenders = []
    for f in list((ROOT / "specc").rglob("*.py")) + list((ROOT / "compiler").rglob("*.py")) + \
            list((ROOT / "exporters").rglob("*.py")):
        if f.name in ("cli.py", "__init__.py") and f.parent.name == "specc" or f.name == "api.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module if isinstance(node, ast.ImportFrom) else ""
            if module in ("specc.api", "api") or "specc.api" in names or (module in ("specc", "") and "api" in names):
                offenders.append(str(f.relative_to(ROOT)))
    assert offenders == []


def test_the_catalog_is_what_this_torch_says():
    from compiler import catalog
    from compiler.ops import MODULES
    assert catalog.dumps(catalog.generate(list(MODULES))) == catalog.PATH.read_text(), \
        "run: python -m compiler.catalog"


def test_synthetic_sources_and_their_checked_options_agree():
    from compiler.train_section import SYNTHETIC
    from specc.training.synthetic import GENERATORS
    assert {k: tuple(g.options) for k, g in GENERATORS.items()} == SYNTHETIC


def test_no_function_is_long_or_has_many_parameters():
    """STYLE 13: about 50 lines and 6 parameters (typer command functions take one per option)."""
    long = []
    for d in ("compiler", "exporters", "specc"):
        for f in (ROOT / d).rglob("*.py"):
            for n in ast.walk(ast.parse(f.read_text())):
                if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                if f.name == "cli.py" and any(isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "command"
                                              for dec in n.decorator_list):
                    continue
                lines = n.end_lineno - n.lineno + 1
                params = len(n.args.args) + len(n.args.kwonlyargs) - int(bool(n.args.args) and n.args.args[0].arg in ("self", "cls"))
                if lines > 60 or params > 7:
                    long.append(f"{f.relative_to(ROOT)}:{n.lineno} {n.name} ({lines} lines, {params} params)")
    assert long == []


def test_the_shipped_schema_validates_every_spec():
    schema = json.loads((ROOT / "schema/specc.schema.json").read_text())
    assert schema == json.loads(invoke("schema").stdout), "run: specc schema > schema/specc.schema.json"
    ops = schema["$defs"]["node"]["anyOf"][1]["properties"]["op"]["enum"]
    assert {"Linear", "split", "Parameter", "arange", "einsum"} <= set(ops)
    for path in list((ROOT / "specs").glob("*.yaml")) + list((ROOT / "specs/zoo").glob("*.yaml")):
        assert "yaml-language-server: $schema=" in path.read_text(), path


def test_the_two_dtype_tables_agree():
    from compiler import shapes, spec
    assert tuple(shapes.DTYPES) == spec.DTYPES


@pytest.mark.parametrize("body,message,where", [
    ("inputs: {x: [batch, 4]}\nlayers: [{op: Linear, out_features: 1}]\n"
     "train:\n  data: {synthetic: {name: [1]}}\n  loss: MSELoss\n  optimizer: {name: SGD, lr: 0.1}\n",
     "unknown synthetic source [1]", (6, 28)),
    ("inputs: {x: [a, b, c, d, e, f, g, h, i, j, k, l, m]}\nlayers: [ReLU]\n",
     "the inputs have 13 symbolic dims; specc handles 12", (3, 10)),
    ("inputs: {x: {shape: [batch, 4], dtype: [1]}}\nlayers: [ReLU]\n", "unknown dtype [1]", (3, 40)),
    ("inputs: {x: [batch, 4]}\nlayers: [{op: Linear, out_features: 1}]\n"
     "train:\n  data: {synthetic: {name: zigzag}}\n  loss: MSELoss\n  optimizer: {name: SGD, lr: 0.1}\n"
     "  scheduler: {name: ReduceLROnPlateau, interval: step}\n",
     "ReduceLROnPlateau steps on a metric at the end of an epoch: it takes neither interval: step nor warmup", (9, 14)),
])
def test_inputs_that_once_crashed_the_front_end(tmp_path, body, message, where):
    spec = tmp_path / "s.yaml"
    spec.write_text("specc: 1\nname: s\n" + body)
    with pytest.raises(specc.SpecError) as info:
        specc.load(spec)
    d = info.value.diagnostics[0]
    assert (d.message, (d.line, d.col)) == (message, where) and d.hint


def test_a_language_model_must_score_every_token_id(tmp_path):
    (tmp_path / "t.txt").write_text("abc " * 200)
    spec = tmp_path / "lm.yaml"
    spec.write_text("specc: 1\nname: lm\ninputs: {idx: {shape: [batch, time], dtype: int64, range: [0, 256]}}\n"
                    "layers:\n  - {op: Embedding, num_embeddings: 256, embedding_dim: 8}\n"
                    "  - {name: head, op: Linear, out_features: 50}\n"
                    "train:\n  data: {text: t.txt, block_size: 8}\n  loss: CrossEntropyLoss\n"
                    "  optimizer: {name: SGD, lr: 0.1}\n")
    r = invoke("build", spec, "-q", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == (f"{spec}:6:5: error: the output 'head' scores 50 tokens, but the targets are "
                                        "ids of input 'idx', which ranges over 256")


def test_external_onnx_data_is_replaced_not_appended(tmp_path, monkeypatch):
    import exporters.to_onnx as to_onnx
    monkeypatch.setattr(to_onnx, "EXTERNAL_DATA_BYTES", -1)  # any model: weights in model.onnx.data
    monkeypatch.chdir(tmp_path)
    sizes = []
    for _ in range(2):
        report = specc.export(ROOT / "specs/mlp3_zigzag.yaml", ("onnx",), latency=False, out=lambda s: None)
        assert report.passed
        sizes.append((tmp_path / "runs/seed-mlp3-zigzag/export/model.onnx.data").stat().st_size)
    assert sizes[0] == sizes[1] > 4096  # the big weights (small ones stay inline)
    assert not list((tmp_path / "runs/seed-mlp3-zigzag/export").glob(".*partial*"))
