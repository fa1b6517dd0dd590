"""FSDP2 training (`--strategy fsdp`): units, activation checkpointing, sharded checkpoints that
resume bit-exact and reshard, a whole model.safetensors at the end, and DDP's learning curve."""
import csv
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, ZOO_SMALL, invoke, run_cli

SPEC = ROOT / "tests/cases/train/fsdp_blocks.yaml"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _compiled(path=SPEC, params=None):
    import specc
    return specc.compiled(path, params)


def _cfg(**changes):
    import dataclasses
    return dataclasses.replace(_compiled().spec.train, **changes)


def _rows(run):
    return list(csv.DictReader(open(run / "metrics.csv")))


def test_units_are_the_repeated_blocks_and_regrouping_keeps_outputs_and_keys():
    from specc.training import sharding
    c = _compiled(ROOT / "specs/zoo/gpt.yaml", ZOO_SMALL["gpt"])
    assert sharding.unit_paths(c, c.spec.train or _cfg()) == ["transformer.h.0", "transformer.h.1"]
    x = torch.randint(0, 97, (2, 8))
    before, keys = c.module(x), {k: v.shape for k, v in c.module.state_dict().items()}
    for unit in ("transformer.h.0", "transformer.h.1"):
        sharding.regroup(c.module, unit)
    c.module.recompile()
    assert torch.equal(c.module(x), before)
    assert {k: v.shape for k, v in c.module.state_dict().items()} == keys
    assert "transformer_h_1 = " in c.module.code  # each block is one call now


def test_listed_units_expand_repeats_and_unknown_ones_are_located():
    from compiler.errors import SpecError
    from specc.training import sharding
    c = _compiled()
    assert sharding.unit_paths(c, _cfg(fsdp_units=("blocks",))) == ["blocks.0", "blocks.1", "blocks.2"]
    assert sharding.unit_paths(c, _cfg(fsdp_units=("blocks.1", "head"))) == ["blocks.1", "head"]
    with pytest.raises(SpecError) as e:
        sharding.unit_paths(c, _cfg(fsdp_units=("blokcs",)))
    assert "no module 'blokcs'" in str(e.value) and "blocks" in e.value.diagnostics[0].hint


def test_activation_checkpointing_recomputes_each_unit_in_backward():
    from specc.training import sharding
    counts = {}
    for ac in (False, True):
        c = _compiled()
        torch.manual_seed(0)
        model = sharding.Sharder(["blocks.0", "blocks.1", "blocks.2"], ac, "fp32", world=1).shard(c.module)
        model.eval()  # no dropout: both passes compute the same values
        calls = []
        model.get_submodule("blocks.1.fc1").register_forward_hook(lambda *a: calls.append(1))
        x = torch.randn(4, 8)
        model(x).sum().backward()
        counts[ac] = (len(calls), model.get_submodule("embed").weight.grad.clone())
    assert counts[False][0] == 1 and counts[True][0] == 2  # the forward ran again in backward
    assert torch.allclose(counts[False][1], counts[True][1])


def test_unknown_strategy_names_the_flag():
    r = invoke("train", SPEC, "--strategy", "fdsp")
    assert r.returncode == 2 and "--strategy" in r.stderr and "fsdp" in r.stderr


def test_bad_fsdp_units_in_the_spec_are_located(in_tmp):
    r = invoke("build", SPEC, "--set", "train.fsdp_units=3", "--out", in_tmp / "x")
    assert r.returncode == 2 and "fsdp_units must be a list" in r.stderr


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Two processes, FSDP, two epochs without a stop."""
    where = tmp_path_factory.mktemp("straight")
    r = run_cli("train", SPEC, "--nproc", "2", "--strategy", "fsdp", "--out", where / "run", cwd=where, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    return where / "run"


@pytest.mark.slow
def test_fsdp_leaves_a_whole_model_and_sharded_checkpoints(straight):
    import specc
    whole = load_file(straight / "model.safetensors")
    built = specc.build(SPEC).state_dict()
    assert {k: v.shape for k, v in whole.items()} == {k: v.shape for k, v in built.items()}
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["epoch-000001.dcp", "epoch-000002.dcp"]
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "extra.safetensors"} <= {
        p.name for p in (straight / "checkpoints/epoch-000002.dcp").iterdir()}
    model = specc.api.compiled_run(straight).module  # what predict and export load
    assert torch.equal(model.state_dict()["head.weight"], whole["head.weight"])


@pytest.mark.slow
def test_fsdp_resume_is_bit_exact_and_reshards_to_one_process(straight, in_tmp):
    r = run_cli("train", SPEC, "--nproc", "2", "--strategy", "fsdp", "--epochs", "1", "--out", "run", timeout=600)
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "run", "--nproc", "2", "--strategy", "fsdp", "--resume", "--epochs", "2", timeout=600)
    assert r.returncode == 0, r.stderr
    a, b = load_file(straight / "model.safetensors"), load_file(in_tmp / "run/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(straight) == [dict(r, seconds=s["seconds"], samples_per_s=s["samples_per_s"])
                               for r, s in zip(_rows(in_tmp / "run"), _rows(straight))]
    shutil.copytree(straight, in_tmp / "one")  # two processes' shards, resumed by one
    r = invoke("train", in_tmp / "one", "--strategy", "fsdp", "--resume", "--epochs", "3")
    assert r.returncode == 0, r.stderr
    rows = _rows(in_tmp / "one")
    assert len(rows) == 3 and float(rows[2]["loss"]) < float(rows[0]["loss"])


@pytest.mark.slow
def test_fsdp_learns_as_ddp_does(straight, in_tmp):
    r = run_cli("train", SPEC, "--nproc", "2", "--strategy", "ddp", "--out", "ddp", timeout=600)
    assert r.returncode == 0, r.stderr
    for x, y in zip(_rows(straight), _rows(in_tmp / "ddp"), strict=True):  # the same seeds, data and masks
        for k in ("loss", "val_loss", "val_accuracy"):
            assert abs(float(x[k]) - float(y[k])) < 1e-4, (k, x, y)


def test_checkpoint_metadata_that_would_run_code_is_refused(in_tmp):
    import os
    import pickle

    from specc.training import sharding

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > pwned.txt",))

    folder = in_tmp / "epoch-000001.dcp"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        sharding._reader(str(folder)).read_metadata()
    assert not (in_tmp / "pwned.txt").exists()


@pytest.mark.slow
def test_a_ddp_checkpoint_resumes_under_fsdp_and_on_with_sharded_checkpoints(in_tmp):
    r = invoke("train", SPEC, "--epochs", "1", "--out", "run")
    assert r.returncode == 0, r.stderr
    r = invoke("train", "run", "--strategy", "fsdp", "--resume", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (in_tmp / "run/checkpoints").iterdir())
    assert names == ["epoch-000001.safetensors", "epoch-000002.dcp"]
    straight = invoke("train", SPEC, "--epochs", "2", "--out", "straight")  # one process: the same numbers
    assert straight.returncode == 0
    a, b = load_file(in_tmp / "straight/model.safetensors"), load_file(in_tmp / "run/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_fsdp_with_bf16_activation_checkpointing_and_accumulation_learns(in_tmp):
    r = run_cli("train", SPEC, "--nproc", "2", "--strategy", "fsdp", "--set", "train.activation_checkpointing=true",
                "--set", "train.precision=bf16", "--set", "train.accumulate=2", "--out", "run", timeout=600)
    assert r.returncode == 0, r.stderr
    rows = _rows(in_tmp / "run")
    assert float(rows[1]["loss"]) < float(rows[0]["loss"]) and float(rows[1]["val_accuracy"]) > 0.8
    whole = load_file(in_tmp / "run/model.safetensors")
    assert all(v.dtype == torch.float32 for v in whole.values())  # bf16 computes; the weights stay fp32
