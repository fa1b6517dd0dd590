"""`specc sweep`: the search checked before any trial, Optuna trials (seeded, pruned on per-epoch
reports, a stored study that a larger --trials extends), the outputs, and the Ray Tune backend."""
import csv

import pytest

from conftest import ROOT, invoke

SPEC = ROOT / "tests/cases/train/sweep_blobs.yaml"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _rows(folder):
    return list(csv.DictReader(open(folder / "trials.csv")))


@pytest.mark.parametrize("search, message", [
    ("lr", "cannot read the search"),
    ("lr=normal(0,1)", "unknown distribution 'normal'"),
    ("train.optimizer.lr=uniform(0.1)", "uniform takes two numbers"),
    ("train.optimizer.lr=uniform(0.5,0.1)", "the range 0.5..0.1 is empty"),
    ("train.optimizer.lr=loguniform(0,0.1)", "loguniform needs bounds above 0"),
    ("hidden=int(4,2.5)", "int takes two integers"),
    ("hidden=choice(4,)", "cannot read the arguments"),
    ("hiddn=int(4,8)", "hiddn"),
    ("train.optimizer.lrr=uniform(0.1,0.2)", "lrr"),
])
def test_a_bad_search_is_exit_2_naming_search(search, message, in_tmp):
    r = invoke("sweep", SPEC, "--search", search, "--trials", "2", "--out", in_tmp / "s")
    assert r.returncode == 2, r.stdout
    assert r.stderr.startswith("--search") and message in r.stderr, r.stderr
    assert not (in_tmp / "s").exists()  # nothing written before the search is known good


def test_bad_options_name_their_flag(in_tmp):
    for args, flag in ((["--trials", "0"], "--trials"), (["--mode", "up"], "--mode"),
                       (["--backend", "hyperopt"], "--backend"), (["--address", "x:1"], "--address")):
        r = invoke("sweep", SPEC, "--search", "hidden=int(4,8)", *args)
        assert r.returncode == 2 and r.stderr.startswith(flag), (args, r.stderr)


def test_a_metric_the_runs_lack_stops_the_sweep(in_tmp):
    r = invoke("sweep", SPEC, "--search", "hidden=int(4,8)", "--trials", "3", "--metric", "val_r2", "--out", "s")
    assert r.returncode == 2 and "--metric" in r.stderr and "val_accuracy" in r.stderr, r.stderr


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(in_tmp):
    r = invoke("sweep", SPEC, "--search", "train.optimizer.lr=choice(1e30)", "--trials", "2", "--out", "s")
    assert r.returncode == 0, r.stderr
    rows = _rows(in_tmp / "s")
    assert [x["state"] for x in rows] == ["failed", "failed"]  # lr 1e30 diverges, in both trials
    assert all("loss became nan" in x["error"] for x in rows)
    assert "no trial completed" in r.stdout and not (in_tmp / "s/best.yaml").exists()


def test_optuna_sweep_outputs_more_trials_and_a_reproducible_best(in_tmp):
    search = ["--search", "train.optimizer.lr=choice(0.03,0.1)", "--search", "hidden=int(4,16)"]
    r = invoke("sweep", SPEC, *search, "--trials", "4", "--out", "s")
    assert r.returncode == 0, r.stderr
    rows = _rows(in_tmp / "s")
    assert [x["trial"] for x in rows] == ["0", "1", "2", "3"]
    assert list(rows[0])[:5] == ["trial", "train.optimizer.lr", "hidden", "val_loss", "state"]
    assert all(x["epochs"] == "2" for x in rows if x["state"] == "complete")  # a report per epoch
    for name in ("best.yaml", "history.png", "importance.png", "study.db"):
        assert (in_tmp / "s" / name).is_file(), name
    assert all((in_tmp / "s/trials" / x["run"] / "metrics.csv").is_file() for x in rows)

    r = invoke("sweep", SPEC, *search, "--trials", "6", "--out", "s")  # the stored study grows by two
    assert r.returncode == 0, r.stderr
    again = _rows(in_tmp / "s")
    assert len(again) == 6 and again[:4] == rows
    values = [(x["train.optimizer.lr"], x["hidden"]) for x in again]
    assert values[4:] != values[:2]  # new suggestions, not the first ones replayed

    complete = [x for x in again if x["state"] == "complete"]
    best = min(complete, key=lambda x: float(x["val_loss"]))
    assert f"best: trial {best['trial']}," in r.stdout
    r = invoke("train", in_tmp / "s/best.yaml", "--out", "retrained")
    assert r.returncode == 0, r.stderr
    retrained = list(csv.DictReader(open(in_tmp / "retrained/metrics.csv")))[-1]
    assert float(retrained["val_loss"]) == pytest.approx(float(best["val_loss"]), rel=1e-6)

    r = invoke("sweep", SPEC, "--search", "hidden=int(4,8)", "--trials", "5", "--out", "s")
    assert r.returncode == 2 and r.stderr.startswith("--out") and "search" in r.stderr


@pytest.mark.slow
def test_parallel_trials_share_the_study(in_tmp):
    r = invoke("sweep", SPEC, "--search", "hidden=int(4,16)", "--trials", "4", "--parallel", "2", "--out", "s")
    assert r.returncode == 0, r.stderr
    rows = _rows(in_tmp / "s")
    assert sorted(int(x["trial"]) for x in rows) == [0, 1, 2, 3]  # one study: no number taken twice
    # the median pruner may stop a trial that reports after the others (which one depends on timing); none fails
    states = [x["state"] for x in rows]
    assert set(states) <= {"complete", "pruned"} and "complete" in states, states


@pytest.mark.slow
def test_ray_backend_runs_the_same_search(in_tmp):
    r = invoke("sweep", SPEC, "--search", "hidden=int(4,16)", "--search", "train.optimizer.lr=loguniform(0.01,0.1)",
               "--trials", "2", "--epochs", "1", "--backend", "ray", "--parallel", "2", "--out", "s")
    assert r.returncode == 0, r.stderr
    rows = _rows(in_tmp / "s")
    assert len(rows) == 2 and {x["state"] for x in rows} == {"complete"}
    assert all(4 <= int(x["hidden"]) <= 16 and 0.01 <= float(x["train.optimizer.lr"]) <= 0.1 for x in rows)
    assert all((in_tmp / "s/trials" / x["run"] / "model.safetensors").is_file() for x in rows)
    assert (in_tmp / "s/best.yaml").is_file() and (in_tmp / "s/history.png").is_file()
