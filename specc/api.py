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


def load_run(run_dir: Path) -> Spec:
    """A run's spec, read from the spec file it was built from when that file still resolves to the
    same spec (so errors point at the file the user edits), else from the run's spec.yaml."""
    run_spec = compiler.load(Path(run_dir) / SPEC)
    try:
        source = json.loads((Path(run_dir) / "summary.json").read_text()).get("source")
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


def emit_python(compiled: Compiled, path: str | os.PathLike) -> Path:
    """Write standalone PyTorch source for a compiled spec (`specc build --emit-python FILE`)."""
    from compiler.eject import eject
    from .fsutil import atomic_write_text
    text = eject(compiled.typed, compiled.spec.name, compiled.spec.tree.loc.file)
    atomic_write_text(path, text)
    return Path(path)


GRAPH_FORMATS = (".dot", ".md", ".svg", ".png")


def write_graph(compiled: Compiled, path: str | os.PathLike) -> Path:
    """A picture of the graph: .dot and .md (Mermaid) always, .svg and .png through Graphviz `dot`."""
    import shutil
    import subprocess
    from compiler.picture import to_dot, to_mermaid
    from .fsutil import atomic_write_bytes, atomic_write_text
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in GRAPH_FORMATS:
        raise SpecError.at(file_loc(str(path)), f"unknown picture format '{suffix or path.name}'",
                           "use .svg or .png (Graphviz), .dot, or .md (Mermaid)")
    title = compiled.spec.name
    if suffix == ".md":
        atomic_write_text(path, to_mermaid(compiled.typed, title))
        return path
    dot_text = to_dot(compiled.typed, title)
    if suffix == ".dot":
        atomic_write_text(path, dot_text)
        return path
    exe = shutil.which("dot")
    if exe is None:
        raise SpecError.at(file_loc(str(path)), "Graphviz 'dot' is not installed, so no .svg or .png can be drawn",
                           "install it (apt-get install graphviz, brew install graphviz), or write .dot or .md")
    run = subprocess.run([exe, f"-T{suffix[1:]}"], input=dot_text.encode(), capture_output=True, timeout=120)
    if run.returncode != 0:
        raise SpecError.at(file_loc(str(path)), f"dot failed: {run.stderr.decode(errors='replace').strip()[:300]}",
                           "write .dot and inspect it")
    atomic_write_bytes(path, run.stdout)
    return path


def _tensor_shapes(source: Any, compiled: Compiled) -> tuple[dict[str, tuple[list[int], str]], str]:
    """A run's weights as saved, else the spec's initial weights: name -> (shape, dtype)."""
    weights = Path(source) / "model.safetensors" if isinstance(source, (str, os.PathLike)) and is_run(source) else None
    if weights is not None and weights.is_file():
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(weights), "pt") as f:
                out = {}
                for k in f.keys():
                    sl = f.get_slice(k)
                    out[k] = (list(sl.get_shape()), str(sl.get_dtype()))
            return out, str(weights)
        except (SafetensorError, OSError, ValueError) as e:
            raise SpecError.at(file_loc(str(weights)), f"not a readable weight file: {str(e)[:200]}",
                               "rebuild the run") from None
    return _state_shapes(compiled), "initial weights of the spec"


_DTYPES = {"torch.float32": "F32", "torch.float64": "F64", "torch.float16": "F16", "torch.bfloat16": "BF16",
           "torch.int64": "I64", "torch.int32": "I32", "torch.bool": "BOOL"}


def _state_shapes(compiled: Compiled) -> dict[str, tuple[list[int], str]]:
    return {k: (list(v.shape), _DTYPES.get(str(v.dtype), str(v.dtype))) for k, v in compiled.module.state_dict().items()}


def diff(a: Any, b: Any, params_a: Overrides = None, params_b: Overrides = None) -> dict:
    """Per-node changes from A to B, and which of A's tensors would load into B (DESIGN: `specc diff`).

    >>> specc.diff("specs/transformer_encoder.yaml", "runs/seed-transformer-encoder")
    """
    from compiler.diff import diff as _diff
    ca, cb = compile(a, params_a), compile(b, params_b)
    ta, origin = _tensor_shapes(a, ca)
    result = _diff(ca.typed, cb.typed, ta, _state_shapes(cb))
    result["a"] = {"source": str(a), "name": ca.spec.name, "weights": origin}
    result["b"] = {"source": str(b), "name": cb.spec.name}
    return result
