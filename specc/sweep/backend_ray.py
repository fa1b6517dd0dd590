"""`--backend ray`: the same search on Ray Tune, where a sweep outgrows one machine.

A local Ray is started for the sweep (`--parallel K` CPUs' worth of trials at once), or
`--address HOST:PORT` joins a running cluster, whose nodes need specc and the data at the same
paths. Trials are sampled at random (seeded) and stopped early by Ray's median stopping rule on the
per-epoch reports; their run folders are under DIR/trials as with Optuna. Ray's own records go to
DIR/ray. Unlike the Optuna study, a second run starts a new search rather than adding to it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.errors import SpecError, file_loc

from . import trial as trials
from .report import Record
from .space import Dim

SEED = 0


def _space(dims: tuple[Dim, ...]) -> dict[str, Any]:
    from ray import tune
    out = {}
    for d in dims:
        if d.kind == "choice":
            out[d.path] = tune.choice(list(d.choices))
        elif d.kind == "int":
            out[d.path] = tune.randint(d.low, d.high + 1)  # Ray's upper bound is exclusive
        elif d.kind == "loguniform":
            out[d.path] = tune.loguniform(d.low, d.high)
        else:
            out[d.path] = tune.uniform(d.low, d.high)
    return out


def _trainable(setup: trials.Setup) -> Any:
    def trainable(config: dict[str, Any]) -> None:
        from ray import tune
        name = f"trial-{tune.get_context().get_trial_id()}"
        values = {d.path: _plain(config[d.path]) for d in setup.dims}
        last = {}

        def report(epoch: int, value: float) -> None:
            last.update(epoch=epoch, value=value)
            tune.report({setup.metric: value, "epoch": epoch, "run": name, "done_training": False})

        try:
            value = trials.run(setup, name, values, report)
        except trials.MetricMissing as e:
            tune.report({"run": name, "error": e.diagnostics[0].message, "fatal": True, "epoch": 0})
            return
        except Exception as e:  # noqa: BLE001 - recorded, and the sweep goes on
            tune.report({"run": name, "error": trials.failure(e), "epoch": last.get("epoch", 0)})
            return
        tune.report({setup.metric: value, "epoch": last.get("epoch", 0), "run": name, "done_training": True})

    return trainable


def _plain(v: Any) -> Any:
    """numpy scalars from Ray's samplers as Python numbers (for --set and the CSV)."""
    return v.item() if hasattr(v, "item") else v


def run(setup: trials.Setup, total: int, parallel: int, address: str | None) -> list[Record]:
    import ray
    from ray import tune
    from ray.tune.schedulers import MedianStoppingRule
    try:
        ray.init(address=address, num_cpus=None if address else max(parallel, 1), include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SpecError.at(file_loc("--address"), f"cannot reach a Ray cluster at {address}: {e}",
                           "start one with `ray start --head`, or leave --address out for a local Ray") from None
    try:
        tuner = tune.Tuner(
            tune.with_resources(_trainable(setup), {"cpu": 1}), param_space=_space(setup.dims),
            tune_config=tune.TuneConfig(
                metric=setup.metric, mode=setup.mode, num_samples=total, max_concurrent_trials=max(parallel, 1),
                search_alg=tune.search.BasicVariantGenerator(random_state=SEED),
                scheduler=MedianStoppingRule(time_attr="epoch", grace_period=1, min_samples_required=3)),
            run_config=tune.RunConfig(name="specc", storage_path=str(Path(setup.out) / "ray"), verbose=0))
        grid = tuner.fit()
        return [_record(setup, i, grid[i]) for i in range(len(grid))]
    finally:
        if address is None:
            ray.shutdown()


def _record(setup: trials.Setup, number: int, result: Any) -> Record:
    m = result.metrics or {}
    if m.get("fatal"):
        raise trials.MetricMissing.at(file_loc("--metric"), m["error"], "pass --metric with a metric the runs report")
    values = {d.path: _plain(result.config[d.path]) for d in setup.dims}
    name = m.get("run", f"trial-{number:04d}")
    error = m.get("error") or (trials.failure(result.error) if result.error else "")
    state = "failed" if error else "complete" if m.get("done_training") else "pruned"
    history = result.metrics_dataframe
    epochs = {}
    if history is not None and setup.metric in history:
        epochs = {int(e): float(v) for e, v in zip(history["epoch"], history[setup.metric]) if v == v}
    return Record(number, values, m.get(setup.metric), state, setup.run_dir(name), error, epochs)
