"""One trial of a sweep: train the spec with the trial's values set, in DIR/trials/trial-NNNN,
reporting the metric after every epoch (the backend may stop it there: pruning).

Trials are seeded: each trains with the spec's `train.seed`, so a trial's values alone decide its
metric, and training the best trial's spec again gives the same number.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compiler.errors import SpecError, file_loc, first_line

from .space import Dim


@dataclass(frozen=True)
class Setup:
    """What every trial needs; plain data, so worker processes and Ray actors can take it."""

    spec: str  # the spec file, absolute
    sets: tuple[str, ...]  # the --set overrides every trial shares
    dims: tuple[Dim, ...]
    metric: str
    mode: str  # min | max
    out: str  # the sweep folder, absolute (epochs, when given, are one of `sets`: train.epochs=N)

    def run_dir(self, name: str) -> Path:
        return Path(self.out) / "trials" / name


class MetricMissing(SpecError):
    """The runs do not report the sweep's metric: every trial would fail the same way, so the sweep stops."""


def run(setup: Setup, name: str, values: dict[str, Any], report: Callable[[int, float], None]) -> float:
    """Train one trial and return its final metric. `report(epoch, value)` is called after each
    epoch and may raise to stop the trial (a pruned trial)."""
    from ..training.session import train

    def on_epoch(row: dict[str, Any]) -> None:
        value = row.get(setup.metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            known = ", ".join(k for k, v in row.items() if isinstance(v, float) and k not in ("lr", "seconds",
                                                                                             "samples_per_s"))
            raise MetricMissing.at(file_loc("--metric"), f"the runs report no '{setup.metric}' (they report {known})",
                                   "pass --metric with one of those (val_* needs train.data.val_split)")
        report(int(row["epoch"]), float(value))

    params = [*setup.sets, *(d.override(values[d.path]) for d in setup.dims)]
    result = train(setup.spec, params, out=setup.run_dir(name), force=True, quiet=True, progress=False,
                   on_epoch=on_epoch)
    return float(result.final[setup.metric])


def failure(e: BaseException) -> str:
    """What to record for a failed trial: the error's first line."""
    if isinstance(e, SpecError) and e.diagnostics:
        d = e.diagnostics[0]
        return f"{d.file}:{d.line}: {d.message}" if d.line else d.message
    return f"{type(e).__name__}: {first_line(e, 200)}"


def values_json(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True)
