"""Run folders (DESIGN §5): where they are, what `specc build` writes, which one is the latest."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from compiler.errors import SpecError, file_loc

from .fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text

RUNS = Path("runs")
SPEC, SUMMARY, WEIGHTS, CHECKPOINTS = "spec.yaml", "summary.json", "model.safetensors", "checkpoints"


def latest_run(root: Path = RUNS) -> Path:
    """The most recently built run under ./runs."""
    candidates = list(root.glob(f"*/{SUMMARY}")) if root.is_dir() else []
    if not candidates:
        raise SpecError.at(file_loc(str(root)), "no run found", "build one first: specc build SPEC")
    return max(candidates, key=lambda p: p.stat().st_mtime_ns).parent


def is_run(path: str | os.PathLike) -> bool:
    if isinstance(path, str) and ("\n" in path or len(path) > 4096):
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


def load_weights(module: Any, path: Path) -> None:
    """Weights from a safetensors file, refusing anything that does not fit the model exactly."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load
    try:
        state = st_load(path.read_bytes())
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecError.at(file_loc(str(path)), f"not a readable weight file: {str(e)[:200]}",
                           "rebuild the run with specc build --force") from None
    own = module.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [k for k in own if k in state and (state[k].shape != own[k].shape or state[k].dtype != own[k].dtype)]
    if missing or extra or bad:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
                 f"wrong shape or dtype: {bad[0]} {tuple(state[bad[0]].shape)} {state[bad[0]].dtype} vs "
                 f"{tuple(own[bad[0]].shape)} {own[bad[0]].dtype}" if bad else ""]
        raise SpecError.at(file_loc(str(path)), "weights do not fit the model: " + "; ".join(p for p in parts if p),
                           "the file belongs to another spec; rebuild the run")
    module.load_state_dict(state)


def has_checkpoints(run_dir: Path) -> bool:
    from .checkpoint import listing
    return bool(listing(run_dir / CHECKPOINTS))


def state_bytes(module: Any) -> bytes:
    from safetensors.torch import save
    return save({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()})


def write_build(run_dir: Path, spec_yaml: str, summary: dict, weights: bytes, force: bool = False) -> None:
    """Write spec.yaml, summary.json and model.safetensors, each atomically.

    A run that has been trained is not overwritten unless `force`: rebuilding would replace the
    trained weights with fresh ones.
    """
    if (run_dir / CHECKPOINTS).exists():
        if not force:
            raise SpecError.at(file_loc(str(run_dir)), "this run has been trained; building again would replace "
                               "its weights", "pass --out DIR for a new run, or --force to start this one over")
        shutil.rmtree(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise SpecError.at(file_loc(str(run_dir)), "run path exists and is not a folder", "pass --out DIR")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / WEIGHTS, weights)
    atomic_write_text(run_dir / SPEC, spec_yaml)
    atomic_write_json(run_dir / SUMMARY, summary)  # last: its presence marks a complete build
