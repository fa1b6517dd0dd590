"""The public Python API; the CLI is a thin layer over these functions."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

import compiler
from compiler.errors import SpecError, file_loc
from compiler.pipeline import Compiled, Overrides, compile_spec
from compiler.spec import Spec

from . import __version__
from .runs import RUNS, SPEC, is_run, state_bytes, write_build


def load(source: Any, params: Overrides = None) -> Spec:
    """Read and check a spec (a path, YAML text, a dict, a run folder, or a loaded Spec)."""
    if isinstance(source, Spec):
        if params:
            raise TypeError("overrides apply to a spec source, not to a loaded Spec")
        return source
    if isinstance(source, (str, os.PathLike)) and is_run(source):
        source = Path(source) / SPEC
    return compiler.load(source, params)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SpecError.at(file_loc(str(path)), f"cannot read {Path(path).name}: {e}", "rebuild the run") from None
    if not isinstance(data, dict):
        raise SpecError.at(file_loc(str(path)), f"{Path(path).name} is not a JSON object", "rebuild the run")
    return data


def seed_of(spec: Spec) -> int:
    seed = spec.train.get("seed") if spec.train is not None else None
    return seed.value if seed is not None and isinstance(seed.value, int) and not isinstance(seed.value, bool) else 0


def compile(source: Any, params: Overrides = None) -> Compiled:
    """Load and compile with the spec's seed, leaving the caller's RNG state untouched."""
    spec = load(source, params)
    with torch.random.fork_rng(devices=[]):
        return compile_spec(spec, seed=seed_of(spec))


def build(source: Any, params: Overrides = None) -> torch.fx.GraphModule:
    """Compile a spec into a `torch.fx.GraphModule` (initial weights seeded by `train.seed`, default 0).

    >>> model = specc.build("specs/mlp2.yaml", {"hidden": 64})
    """
    return compile(source, params).module


@dataclass
class BuildResult:
    compiled: Compiled
    run_dir: Path


def resolved_yaml(spec: Spec, origin: str) -> str:
    """spec.yaml of a run: params evaluated, overrides applied, data paths made absolute (the run
    folder is not where the spec was)."""
    data = spec.resolved()
    source = (data.get("train") or {}).get("data") if isinstance(data.get("train"), dict) else None
    if isinstance(source, dict):
        for key in ("csv", "npz"):
            if isinstance(source.get(key), str) and not Path(source[key]).is_absolute():
                from .trainspec import spec_dir
                source[key] = str(spec_dir(spec) / source[key])
    header = f"# resolved by specc {__version__} from {origin}; params and overrides applied\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def build_run(source: Any, params: Overrides = None, out: str | os.PathLike | None = None,
              force: bool = False, origin: str | None = None) -> BuildResult:
    """`specc build`: compile, then write the run folder (spec.yaml, summary.json, model.safetensors)."""
    compiled = compile(source, params)
    run_dir = Path(out) if out is not None else RUNS / compiled.spec.name
    if origin is None:
        origin = str(source) if isinstance(source, (str, os.PathLike)) and "\n" not in str(source) else "<text>"
    summary = dict(compiled.summary, specc_version=__version__, source=origin)
    write_build(run_dir, resolved_yaml(compiled.spec, origin), summary, state_bytes(compiled.module), force)
    return BuildResult(compiled, run_dir)


def train(target: Any = None, params: Overrides = None, **options: Any) -> Any:
    """Train a spec or a run folder with the shared loop (DESIGN §3); returns a `TrainResult`.

    >>> result = specc.train("specs/mlp2_zigzag.yaml", epochs=5)
    >>> result.final["val_loss"]
    """
    from .trainer import train as _train
    return _train(target, params, **options)


def export(target: Any = None, formats: Any = None, **options: Any) -> Any:
    """Export a run to each format and check parity (DESIGN §4); returns a `ParityReport`.

    >>> report = specc.export("runs/seed-transformer-encoder", formats=("onnx",))
    >>> report.passed
    """
    from .exporting import export as _export
    return _export(target, formats, **options)
