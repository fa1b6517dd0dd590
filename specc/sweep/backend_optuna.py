"""The embedded backend: an Optuna study stored in DIR/study.db (SQLite).

- TPE sampling, seeded, so the same command suggests the same values.
- Running the command again with a larger `--trials` adds trials to the stored study; a smaller
  or equal one only rewrites the outputs.
- Median pruning on the per-epoch reports: a trial whose metric at epoch e is worse than the
  median of the earlier trials at epoch e stops there (after 3 complete trials).
- `--parallel K` runs K worker processes on the one study (SQLite serializes them).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from compiler.errors import SpecError

from . import trial as trials
from .report import Record
from .space import Dim

STUDY = "specc"
SEED = 0


def distribution(d: Dim) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    if d.kind == "choice":
        return CategoricalDistribution(list(d.choices))
    if d.kind == "int":
        return IntDistribution(d.low, d.high)
    return FloatDistribution(float(d.low), float(d.high), log=d.kind == "loguniform")


def storage(out: str) -> str:
    return f"sqlite:///{Path(out) / 'study.db'}"


def _study(setup: trials.Setup, worker: int = 0) -> Any:
    """The stored study. Its sampler is seeded by how many trials it holds (and the worker), so the
    same command suggests the same values, and a rerun that adds trials does not replay old ones."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are in trials.csv, not tracebacks here
    study = optuna.create_study(storage=storage(setup.out), study_name=STUDY, load_if_exists=True,
                                direction="minimize" if setup.mode == "min" else "maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    study.sampler = optuna.samplers.TPESampler(seed=SEED + 1000 * worker + len(study.trials))
    return study


class _Failed(Exception):
    """A trial that failed; Optuna records it as FAIL and the study goes on."""


def _objective(setup: trials.Setup) -> Any:
    import optuna

    def objective(t: Any) -> float:
        values = {d.path: _suggest(t, d) for d in setup.dims}
        name = f"trial-{t.number:04d}"
        t.set_user_attr("run", name)

        def report(epoch: int, value: float) -> None:
            t.report(value, epoch)
            if t.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            return trials.run(setup, name, values, report)
        except (optuna.TrialPruned, trials.MetricMissing):
            raise
        except Exception as e:  # noqa: BLE001 - any trial's failure is recorded, and the sweep goes on
            t.set_user_attr("error", trials.failure(e))
            raise _Failed(trials.failure(e)) from None

    return objective


def _suggest(t: Any, d: Dim) -> Any:
    if d.kind == "choice":
        return t.suggest_categorical(d.path, list(d.choices))
    if d.kind == "int":
        return t.suggest_int(d.path, d.low, d.high)
    return t.suggest_float(d.path, float(d.low), float(d.high), log=d.kind == "loguniform")


def _work(setup: trials.Setup, total: int, worker: int = 0) -> None:
    """One worker: run trials until the study holds `total` (whatever their state)."""
    from optuna.study import MaxTrialsCallback
    study = _study(setup, worker)
    left = total - len(study.trials)
    if left > 0:
        study.optimize(_objective(setup), n_trials=left, catch=(_Failed,),
                       callbacks=[MaxTrialsCallback(total, states=None)])


def run(setup: trials.Setup, total: int, parallel: int) -> list[Record]:
    study = _study(setup)
    if parallel <= 1:
        _work(setup, total)
    else:
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch threads
        with ProcessPoolExecutor(max_workers=parallel, mp_context=ctx) as pool:
            for f in [pool.submit(_work, setup, total, k) for k in range(parallel)]:
                _result(f)
    return [_record(setup, t) for t in study.get_trials(deepcopy=False)]


def _result(future: Any) -> None:
    """A worker's error: a metric the runs lack stops the sweep; SpecErrors come back as such."""
    try:
        future.result()
    except SpecError:
        raise
    except Exception as e:  # a worker process that died: its trials stay RUNNING, and are shown so
        raise RuntimeError(f"a sweep worker failed: {e}") from e


def _record(setup: trials.Setup, t: Any) -> Record:
    from optuna.trial import TrialState
    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}.get(
        t.state, "running")
    name = t.user_attrs.get("run", f"trial-{t.number:04d}")
    value = t.value if t.state == TrialState.COMPLETE else (
        t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
    return Record(t.number, dict(t.params), value, state, setup.run_dir(name), t.user_attrs.get("error", ""),
                  dict(t.intermediate_values))
