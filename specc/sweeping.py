"""`specc sweep`: search a spec's params and train settings, one seeded training run per trial.

    specc sweep specs/mlp2_zigzag.yaml --search train.optimizer.lr=loguniform(1e-4,1e-1) \\
        --search hidden=int(16,128) --trials 20 --out sweeps/zigzag

The search is checked against the spec first (space.py); trials run on Optuna (embedded, the
study stored in DIR) or Ray Tune; the outputs (report.py) are the same for both:
DIR/trials.csv, DIR/best.yaml, DIR/history.png, DIR/importance.png and DIR/trials/<run>/.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from compiler.errors import SpecError, file_loc

from .fsutil import atomic_write_json
from .sweep import report, space
from .sweep.report import SweepResult
from .sweep.trial import Setup

BACKENDS = ("optuna", "ray")
IDENTITY = "sweep.json"  # what the folder's sweep searches: a rerun must search the same


@dataclass(frozen=True)
class Options:
    """How a sweep runs, besides its spec, search and trial count (the CLI's flags)."""

    metric: str = "val_loss"  # a metrics.csv column, at the last epoch
    mode: str = "min"
    out: Any = None  # the sweep folder (default: sweeps/<name>)
    parallel: int = 1  # trials at once
    backend: str = "optuna"
    address: str | None = None  # a Ray cluster
    params: tuple[str, ...] = ()  # --set overrides every trial shares
    epochs: int | None = None  # per trial, written into each trial's spec as train.epochs


def sweep(spec: Any, search: Iterable[str], trials: int = 20, **options: Any) -> SweepResult:
    """Run (or continue) a sweep and write its outputs; returns the trials and the best one."""
    o = Options(**{**options, "params": tuple(options.get("params") or ())})
    _check_options(trials, o)
    spec_path = _spec_file(spec)
    sets = o.params + ((f"train.epochs={o.epochs}",) if o.epochs is not None else ())  # in best.yaml too
    dims = space.parse(list(search))
    space.check(str(spec_path), list(sets), dims)
    from .runs import load
    folder = Path(o.out) if o.out is not None else Path("sweeps") / load(str(spec_path), list(sets)).name
    folder = folder.resolve()
    _claim(folder, {"spec": str(spec_path), "set": list(sets), "search": [d.text for d in dims],
                    "metric": o.metric, "mode": o.mode, "backend": o.backend})
    setup = Setup(str(spec_path), sets, tuple(dims), o.metric, o.mode, str(folder))
    if o.backend == "ray":
        from .sweep import backend_ray
        records = backend_ray.run(setup, trials, o.parallel, o.address)
    else:
        from .sweep import backend_optuna
        records = backend_optuna.run(setup, trials, o.parallel)
    return report.write(folder, dims, records, o.metric, o.mode)


def _check_options(trials: int, o: Options) -> None:
    checks = [(trials >= 1, "--trials", f"--trials must be at least 1, got {trials}", "--trials 20"),
              (o.mode in ("min", "max"), "--mode", f"unknown mode {o.mode!r}", "--mode min | max"),
              (o.parallel >= 1, "--parallel", f"--parallel must be at least 1, got {o.parallel}", "--parallel 2"),
              (o.backend in BACKENDS, "--backend", f"unknown backend {o.backend!r}", "--backend optuna | ray"),
              (o.address is None or o.backend == "ray", "--address", "--address is a Ray cluster's",
               "add --backend ray"),
              (o.epochs is None or o.epochs >= 1, "--epochs", f"--epochs must be at least 1, got {o.epochs}",
               "--epochs 5")]
    for ok, flag, message, hint in checks:
        if not ok:
            raise SpecError.at(file_loc(flag), message, hint)


def _spec_file(spec: Any) -> Path:
    path = Path(spec)
    if not path.is_file():
        raise SpecError.at(file_loc(str(spec)), "no such spec file" if not path.exists() else "not a spec file",
                           "pass a spec .yaml (to sweep a run, pass the spec it was built from)")
    return path.resolve()


def _claim(folder: Path, identity: dict[str, Any]) -> None:
    """A sweep folder holds one search: a rerun with the same settings adds trials; another search is refused."""
    path = folder / IDENTITY
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old != identity:
            changed = sorted(k for k in identity if not isinstance(old, dict) or old.get(k) != identity[k])
            raise SpecError.at(file_loc("--out"), f"{folder} holds another sweep (its {', '.join(changed)} differ)",
                               "pass another --out, or delete the folder to start over")
        return
    if folder.exists() and any(folder.iterdir()):
        raise SpecError.at(file_loc("--out"), f"{folder} exists and is not a sweep folder", "pass another --out")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, identity)
