"""The `specc` command, run for real: exit codes, output and the run folder."""
import json
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

import specc
from conftest import ROOT


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys, specc.cli; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_help_lists_the_commands(cli):
    r = cli("--help")
    assert r.returncode == 0
    for cmd in ("build", "ops", "schema"):
        assert cmd in r.stdout


def test_build_writes_the_run_folder(cli, tmp_path):
    r = cli("build", ROOT / "specs/transformer_encoder.yaml", "--set", "depth=2")
    assert r.returncode == 0, r.stderr
    assert "layers.1.attn.q" in r.stdout and "Linear" in r.stdout and "(batch, 16, 64)" in r.stdout
    assert "total 68,874 parameters" in r.stdout
    run = tmp_path / "runs" / "seed-transformer-encoder"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parameters"] == summary["trainable_parameters"] == 68_874
    assert summary["inputs"] == {"x": {"shape": ["batch", 16, 64], "dtype": "float32"}}
    assert summary["outputs"] == {"classifier": "(batch, 10)"}
    node = next(n for n in summary["nodes"] if n["name"] == "classifier")
    assert node == {"name": "classifier", "op": "Linear", "shape": "(batch, 10)", "parameters": 10250, "line": 39}
    resolved = yaml.safe_load((run / "spec.yaml").read_text())
    assert resolved["params"]["depth"] == 2
    # the resolved spec rebuilds the same model: same hash, same weights
    assert specc.load(run).hash == summary["spec_hash"]
    weights = load_file(run / "model.safetensors")
    rebuilt = specc.build(run).state_dict()
    assert weights.keys() == rebuilt.keys()
    assert all((weights[k] == rebuilt[k]).all() for k in weights)
    assert not list(run.glob(".*tmp"))


def test_bad_spec_exits_2_and_writes_nothing(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("specc: 1\nname: bad\ninputs: {x: [batch, 4]}\nlayers:\n  - {op: Lienar, out_features: 2}\n")
    r = cli("build", bad)
    assert r.returncode == 2
    assert r.stderr.startswith(f"{bad}:5:10: error: unknown op 'Lienar'\n")
    assert "hint: did you mean 'Linear'?" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_override_exits_2(cli):
    r = cli("build", ROOT / "specs/mlp2_zigzag.yaml", "--set", "hiden=3")
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == "--set:1:1: error: unknown param 'hiden'"
    assert "did you mean 'hidden'?" in r.stderr


def test_missing_file_and_bad_flag(cli):
    r = cli("build", "nope.yaml")
    assert r.returncode == 2 and "nope.yaml:1:1: error: spec file does not exist" in r.stderr
    r = cli("build", ROOT / "specs/mlp2_zigzag.yaml", "--frobnicate")
    assert r.returncode == 2


def test_trained_run_is_not_overwritten(cli, tmp_path):
    spec = ROOT / "specs/mlp2_zigzag.yaml"
    assert cli("build", spec, "-q").returncode == 0
    run = tmp_path / "runs" / "seed-mlp2-zigzag"
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "keep").write_text("trained")
    r = cli("build", spec, "-q")
    assert r.returncode == 2 and "has been trained" in r.stderr
    assert (run / "checkpoints" / "keep").exists()
    r = cli("build", spec, "-q", "--force")
    assert r.returncode == 0 and not (run / "checkpoints").exists()


def test_out_and_code(cli, tmp_path):
    r = cli("build", ROOT / "specs/linear_regression.yaml", "--out", tmp_path / "elsewhere", "--code", "-q")
    assert r.returncode == 0
    assert "def forward(self, x):" in r.stdout and "linear = self.linear(x)" in r.stdout
    assert (tmp_path / "elsewhere" / "model.safetensors").is_file()


def test_ops_lists_every_op_with_arguments(cli):
    r = cli("ops", "--json")
    assert r.returncode == 0
    ops = {o["name"]: o for o in json.loads(r.stdout)}
    assert {"Linear", "Conv2d", "GRU", "MultiheadAttention", "matmul", "scaled_dot_product_attention"} <= set(ops)
    lin = {a["name"]: a for a in ops["Linear"]["args"]}
    assert lin["in_features"]["inferred"] and lin["out_features"]["required"]
    assert lin["bias"]["default"] is True
    table = cli("ops")
    assert "in_features: int" in table.stdout and "[inferred]" in table.stdout


def test_schema_is_shipped_and_current(cli):
    r = cli("schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema == json.loads((ROOT / "schema/specc.schema.json").read_text()), "run: specc schema > schema/specc.schema.json"
    assert "Linear" in schema["$defs"]["node"]["anyOf"][1]["properties"]["op"]["enum"]
    for path in (ROOT / "specs").glob("*.yaml"):
        assert "yaml-language-server: $schema=../schema/specc.schema.json" in path.read_text()


def test_internal_errors_exit_70_with_a_log(capsys):
    import typer

    from specc.cli import _guard

    def broken():
        raise RuntimeError("boom")

    with pytest.raises(typer.Exit) as info:
        _guard(broken)
    assert info.value.exit_code == 70
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" not in err
    log = err.split("traceback is in ")[1].strip()
    assert "RuntimeError: boom" in open(log).read()
