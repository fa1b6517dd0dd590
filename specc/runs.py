"""Run folders (DESIGN §5), in one place: which folder a target means, what a build writes, when a
folder may be overwritten, and reading a run back.

    runs/<name>/spec.yaml          the resolved spec (params and overrides applied, data paths absolute)
               summary.json        parameters, inputs, outputs, nodes (and `trained` after training)
               model.safetensors   the weights: initial, imported (--weights) or trained
               checkpoints/        written by specc train; a run with checkpoints is not rebuilt unless --force

Nothing here imports torch at import time.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

import compiler
from compiler.errors import SpecError, file_loc
from compiler.spec import Spec

from . import weights
from .fsutil import atomic_write_json, atomic_write_text

RUNS = Path("runs")
SPEC, SUMMARY, WEIGHTS, CHECKPOINTS = "spec.yaml", "summary.json", "model.safetensors", "checkpoints"


def latest_run(root: Path = RUNS) -> Path:
    """The most recently built run under ./runs."""
    candidates = list(root.glob(f"*/{SUMMARY}")) if root.is_dir() else []
    if not candidates:
        raise SpecError.at(file_loc(str(root)), "no run found", "build one first: specc build SPEC")
    return max(candidates, key=lambda p: p.stat().st_mtime_ns).parent


def is_run(path: Any) -> bool:
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, str) and ("\n" in path or len(path) > 4096):
        return False  # YAML text, not a path
    try:
        return Path(path).is_dir() and (Path(path) / SPEC).is_file()
    except (OSError, ValueError):
        return False


def target_path(target: str | os.PathLike | None) -> Path:
    """TARGET is a spec file or a run folder; none means the latest run."""
    if target is None:
        return latest_run()
    p = Path(target)
    if p.is_dir():
        if not is_run(p):
            raise SpecError.at(file_loc(str(p)), "not a run folder (no spec.yaml in it)",
                               "pass a spec file or a folder written by specc build")
        return p
    if not p.exists():
        raise SpecError.at(file_loc(str(p)), "no such spec file or run folder", "check the path")
    return p


def load(source: Any, params: Any = None) -> Spec:
    """A spec from a path, YAML text, a dict, a run folder, or a loaded Spec."""
    if isinstance(source, Spec):
        if params:
            raise TypeError("overrides apply to a spec source, not to a loaded Spec")
        return source
    if is_run(source):
        source = Path(source) / SPEC
    return compiler.load(source, params)


def load_run(run_dir: Path, params: Any = None) -> Spec:
    """A run's spec, read from the spec file it was built from when that file still resolves to the
    same spec (so errors point at the file the user edits), else from the run's spec.yaml."""
    run_spec = compiler.load(Path(run_dir) / SPEC, params)
    if params:
        return run_spec
    try:
        source = json.loads((Path(run_dir) / SUMMARY).read_text()).get("source")
        if source and Path(source).is_file():
            original = compiler.load(source)
            if original.hash == run_spec.hash:
                return original
    except (OSError, ValueError, SpecError, AttributeError):
        pass
    return run_spec


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SpecError.at(file_loc(str(path)), f"cannot read {Path(path).name}: {e}", "rebuild the run") from None
    if not isinstance(data, dict):
        raise SpecError.at(file_loc(str(path)), f"{Path(path).name} is not a JSON object", "rebuild the run")
    return data


def resolved_yaml(spec: Spec, origin: str) -> str:
    """spec.yaml of a run: params evaluated, overrides applied, data paths absolute."""
    from specc import __version__
    header = f"# resolved by specc {__version__} from {origin}; params and overrides applied\n"
    return header + yaml.safe_dump(spec.resolved(), sort_keys=False, allow_unicode=True, width=100)


def has_checkpoints(run_dir: Path) -> bool:
    from .training.checkpoint import listing
    return bool(listing(run_dir / CHECKPOINTS))


def stopped_part_way(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run whose training never finished (interrupted, or diverged), else
    None. Its model.safetensors still holds the weights it started from."""
    from .training.checkpoint import listing
    found = listing(run_dir / CHECKPOINTS)
    return found[-1][1] if found and "trained" not in read_json(run_dir / SUMMARY) else None


def is_trained(run_dir: Path) -> bool:
    """Trained by specc train, or holding imported weights (specc build --weights): not its initial ones."""
    summary = read_json(run_dir / SUMMARY)
    return has_checkpoints(run_dir) or "trained" in summary or "weights" in summary


def check_overwrite(run_dir: Path, force: bool) -> None:
    """The one overwrite rule: a run that has been trained is replaced only with `force`."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SpecError.at(file_loc(str(run_dir)), "run path exists and is not a folder", "pass --out DIR")
    if (run_dir / CHECKPOINTS).exists() and not force:
        raise SpecError.at(file_loc(str(run_dir)), "this run has been trained; building again would replace "
                           "its weights", "pass --out DIR for a new run, or --force to start this one over")


def write_build(run_dir: Path, spec_yaml: str, summary: dict, module: Any, force: bool = False) -> None:
    """Write spec.yaml, summary.json and model.safetensors, each atomically (summary.json last: its
    presence marks a complete build)."""
    check_overwrite(run_dir, force)
    if (run_dir / CHECKPOINTS).exists():
        from .training.lock import RunLock
        with RunLock(run_dir):  # never under a trainer's feet (its own rebuild holds the lock already)
            for child in run_dir.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    weights.write_state(module, run_dir / WEIGHTS)  # streamed from the module's tensors, never a bytes copy
    atomic_write_text(run_dir / SPEC, spec_yaml)
    atomic_write_json(run_dir / SUMMARY, summary)


def origin_of(source: Any) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) and "\n" not in str(source) else "<text>"


def run_of(target: Any, params: Any = None) -> tuple[Path | None, Spec, str]:
    """(the run folder if TARGET is one, the spec it means, where the spec came from)."""
    path = target_path(target)
    if is_run(path):
        return path, load_run(path, params), str(path)
    return None, load(path, params), str(path)
