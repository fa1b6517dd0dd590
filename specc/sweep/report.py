"""A sweep's outputs, the same for every backend: DIR/trials.csv, DIR/best.yaml, DIR/history.png
and DIR/importance.png. Each is written atomically, and rewritten whole after every sweep."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write_bytes, atomic_write_text
from .space import Dim

STATES = ("complete", "pruned", "failed", "running")


@dataclass
class Record:
    """One trial as the outputs show it."""

    number: int
    values: dict[str, Any]
    metric: float | None
    state: str  # one of STATES
    run_dir: Path
    error: str = ""
    epochs: dict[int, float] = field(default_factory=dict)  # the per-epoch reports


@dataclass
class SweepResult:
    out: Path
    trials: list[Record]
    metric: str
    mode: str
    best: Record | None

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r.state == s for r in self.trials) for s in STATES if any(r.state == s for r in self.trials)}


def best_of(records: list[Record], mode: str) -> Record | None:
    done = [r for r in records if r.state == "complete" and r.metric is not None and not math.isnan(r.metric)]
    if not done:
        return None
    key = (lambda r: r.metric) if mode == "min" else (lambda r: -r.metric)
    return min(done, key=lambda r: (key(r), r.number))  # the earliest of equals


def write(out: Path, dims: list[Dim], records: list[Record], metric: str, mode: str) -> SweepResult:
    records = sorted(records, key=lambda r: r.number)
    _csv(out / "trials.csv", dims, records, metric)
    best = best_of(records, mode)
    if best is not None and (best.run_dir / "spec.yaml").is_file():
        atomic_write_text(out / "best.yaml", (best.run_dir / "spec.yaml").read_text())
    _pictures(out, dims, records, metric, mode)
    return SweepResult(out, records, metric, mode, best)


def _csv(path: Path, dims: list[Dim], records: list[Record], metric: str) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial", *(d.path for d in dims), metric, "state", "epochs", "run", "error"])
    for r in records:
        value = "" if r.metric is None else repr(r.metric)
        w.writerow([r.number, *(r.values.get(d.path, "") for d in dims), value, r.state, len(r.epochs),
                    r.run_dir.name, r.error])
    atomic_write_text(path, buf.getvalue())


def _pictures(out: Path, dims: list[Dim], records: list[Record], metric: str, mode: str) -> None:
    try:
        import matplotlib
    except ImportError:  # a dependency, but a bare environment may lack it: no pictures then
        return
    matplotlib.use("Agg")
    _save(out / "history.png", _history(records, metric, mode))
    importance = importances(dims, records, mode)
    if importance:
        _save(out / "importance.png", _bars(importance, metric))


def _history(records: list[Record], metric: str, mode: str) -> Any:
    """The metric of every trial, in order, and the best so far."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for state, marker in (("complete", "o"), ("pruned", "x")):
        rs = [r for r in records if r.state == state and r.metric is not None]
        if rs:
            ax.scatter([r.number for r in rs], [r.metric for r in rs], marker=marker, label=state)
    best, xs, ys = None, [], []
    for r in records:
        if r.state == "complete" and r.metric is not None:
            best = r.metric if best is None else (min if mode == "min" else max)(best, r.metric)
            xs.append(r.number)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="C3", label="best so far")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("optimization history")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing completed: an empty chart, without a legend
        ax.legend()
    return fig


def _bars(importance: dict[str, float], metric: str) -> Any:
    import matplotlib.pyplot as plt
    names = sorted(importance, key=importance.get)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(names)))
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel(f"importance for {metric} (fANOVA, sums to 1)")
    ax.set_title("parameter importance")
    fig.tight_layout()
    return fig


def _save(path: Path, fig: Any) -> None:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def importances(dims: list[Dim], records: list[Record], mode: str) -> dict[str, float]:
    """Optuna's fANOVA importance of each searched path over the complete trials (whatever backend
    ran them); empty with fewer than two, or when the metric never varied."""
    import optuna

    from .backend_optuna import distribution
    done = [r for r in records if r.state == "complete" and r.metric is not None and math.isfinite(r.metric)]
    if len(done) < 2 or len({r.metric for r in done}) < 2:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    dists = {d.path: distribution(d) for d in dims}
    for r in done:
        study.add_trial(optuna.trial.create_trial(params={d.path: r.values[d.path] for d in dims},
                                                  distributions=dists, value=r.metric))
    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # e.g. every trial had the same values
        return {}
