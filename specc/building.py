"""`specc build`: compile a spec (optionally importing weights), write its run folder, and the
extras a build can write: standalone PyTorch source and a picture of the graph."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from compiler.errors import SpecError, file_loc
from compiler.pipeline import Compiled, compile_spec
from compiler.spec import Spec

from . import hf, runs, weights


@dataclass
class BuildResult:
    compiled: Compiled
    run_dir: Path


@dataclass(frozen=True)
class Import:
    """`--weights FILE` (a weight file, or a Hugging Face folder) with its `--weights-map` rules."""

    file: Any = None
    rules: tuple[str, ...] = ()

    @property
    def is_folder(self) -> bool:
        return self.file is not None and Path(self.file).is_dir()

    @classmethod
    def of(cls, file: Any, rules: Iterable[str] = ()) -> "Import":
        rules = tuple(rules or ())
        if file is None and rules:
            raise SpecError.at(file_loc("--weights-map"), "--weights-map renames the keys of --weights",
                               "add --weights FILE")
        return cls(file, rules)


def compile_with(source: Any, params: Any = None, imported: Import = Import()) -> Compiled:
    """Load and compile (weights seeded by `train.seed`); with an import, its tensors become the
    model's: built with its parameters on the meta device, then loaded strictly with assign, so the
    memory-mapped file is the only copy."""
    if imported.file is None:
        return compile_spec(runs.load(source, params))
    if imported.is_folder:
        folder = hf.open_folder(imported.file)
        spec, state = _hf_spec(source, params, folder), hf.read_state(folder)
    else:
        spec, state = runs.load(source, params), weights.read(imported.file)
    compiled = compile_spec(spec, empty=True)
    state = weights.rename(state, imported.rules)
    weights.load_strict(compiled.module, state, imported.file, weights.aliases(compiled.module), assign=True)
    return compiled


def _hf_spec(source: Any, params: Any, folder: "hf.Folder") -> Spec:
    """The spec with config.json's values as its params (the spec's `hf:` mapping), then `params`."""
    from compiler.check import check
    from compiler.hf_section import read_hf
    from compiler.overrides import apply_overrides
    from compiler.pipeline import read_tree
    if isinstance(source, Spec):
        raise SpecError.at(file_loc(source.file), "a Hugging Face folder sets the params of a spec source, not of "
                           "a loaded Spec", "pass the spec's path or text")
    tree = read_tree(Path(source) / runs.SPEC if runs.is_run(source) else source)
    declared = tree.get("params")
    section = read_hf(tree.get("hf"), list(declared.value) if declared is not None and declared.is_map else [])
    defaults = declared.plain() if declared is not None and declared.is_map else {}
    apply_overrides(tree, hf.params_for(folder, section, tree.loc.file, defaults))
    apply_overrides(tree, params)
    return check(tree)


def build_run(source: Any, params: Any = None, out: str | os.PathLike | None = None, force: bool = False,
              origin: str | None = None, imported: Import = Import()) -> BuildResult:
    """Compile, then write the run folder (spec.yaml, summary.json, model.safetensors)."""
    compiled = compile_with(source, params, imported)
    from .training.targets import check
    check(compiled.spec, compiled.typed)  # an output that cannot meet its target is an error now, not in train
    from specc import __version__
    run_dir = Path(out) if out is not None else runs.RUNS / compiled.spec.name
    runs.check_overwrite(run_dir, force)
    origin = origin if origin is not None else runs.origin_of(source)
    summary = dict(compiled.summary, specc_version=__version__, source=origin)
    if imported.file is not None:
        summary["weights"] = {"imported": str(imported.file), "map": list(imported.rules)}
        if imported.is_folder:
            summary["weights"]["format"] = "huggingface"
    runs.write_build(run_dir, runs.resolved_yaml(compiled.spec, origin), summary, compiled.module, force)
    return BuildResult(compiled, run_dir)


def ensure_built(spec: Spec, run_dir: Path, origin: str) -> None:
    """Build `run_dir` from `spec` unless it already holds exactly this spec. A run trained from a
    different version of the spec is never replaced here."""
    if runs.is_run(run_dir):
        old = runs.load(run_dir)
        if old.hash == spec.hash:
            return
        if runs.has_checkpoints(run_dir):
            raise SpecError.at(file_loc(str(run_dir)), f"{run_dir} was trained from a different version of {origin}",
                               f"use the run itself ({run_dir}), or start it over with --force")
    build_run(spec, out=run_dir, force=True, origin=origin)


def compile_run(run_dir: Path) -> Compiled:
    """A run's model with the weights it holds (trained, imported or initial), without rebuilding it.
    The tensors are copied out of the memory-mapped file: a fresh allocation is aligned as every other
    load of the run is, so the model computes bit for bit what they do (a mapped tensor may not be)."""
    path = run_dir / runs.WEIGHTS
    if not path.is_file():
        raise SpecError.at(file_loc(str(path)), "the run has no weights", "build it again: specc build SPEC --force")
    compiled = compile_spec(runs.load_run(run_dir))
    weights.load_file(compiled.module, path)
    return compiled


def emit_python(compiled: Compiled, path: str | os.PathLike) -> Path:
    """Write standalone PyTorch source for a compiled spec (`specc build --emit-python FILE`)."""
    from compiler.eject import eject

    from .fsutil import atomic_write_text
    text = eject(compiled.typed, compiled.spec.name, compiled.spec.file)
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
    try:
        run = subprocess.run([exe, f"-T{suffix[1:]}"], input=dot_text.encode(), capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise SpecError.at(file_loc(str(path)), "Graphviz 'dot' took more than 120 s to draw the graph",
                           "write .dot and draw it yourself, or draw a smaller setting of the spec") from None
    if run.returncode != 0:
        raise SpecError.at(file_loc(str(path)), f"dot failed: {run.stderr.decode(errors='replace').strip()[:300]}",
                           "write .dot and inspect it")
    atomic_write_bytes(path, run.stdout)
    return path
