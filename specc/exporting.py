"""`specc export`: export a run to each format, reload every artifact, check parity, write the report.

    report = specc.export("runs/seed-transformer-encoder", formats=("onnx", "pt2"))
    report.passed
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable


from compiler.errors import SpecError, file_loc, first_line
from compiler.export_section import FORMATS, ExportConfig
from exporters import compiled as compile_check
from exporters import locate, parity, report as reports, to_onnx, to_pt2, to_torchscript
from exporters.artifact import Artifact
from exporters.errors import ExportError
from exporters.inputs import example_inputs, make_inputs, size_grid

from . import __version__, runs
from .building import compile_run
from .fsutil import atomic_write_text

FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt"}


def _run_dir(target: Any) -> Path:
    """The run to export: the target run, or the run of the target spec (built first if needed)."""
    run_dir, spec, origin = runs.run_of(target)
    if run_dir is not None:
        return run_dir
    run_dir = runs.RUNS / spec.name
    runs.ensure_built(spec, run_dir, origin)
    return run_dir


def export(target: Any = None, formats: tuple[str, ...] | list[str] | None = None, *, opset: int | None = None,
           atol: float | None = None, rtol: float | None = None, exporter: str | None = None,
           verify: bool = False, latency: bool = True, out: Callable[[str], None] | None = None) -> parity.ParityReport:
    """Export a run (or a spec's run), check every artifact against the eager model, write the reports."""
    say = out or (lambda s: print(s, flush=True))
    run_dir = _run_dir(target)
    compiled = compile_run(run_dir)
    spec = compiled.spec
    cfg = spec.export.override(opset=opset, atol=atol, rtol=rtol, exporter=exporter)
    chosen = tuple(formats) if formats else cfg.formats
    for f in chosen:
        if f not in FORMATS:
            raise SpecError.at(file_loc("--format"), f"unknown format {f!r}", f"formats: {', '.join(FORMATS)}")
    module = compiled.module
    module.train(False)  # eval mode
    trained = runs.is_trained(run_dir)
    if not trained:
        say(f"note: {run_dir} was never trained; exporting its initial weights")
    _check_plugin_formats(compiled, chosen)
    inputs = spec.inputs
    output_names = list(module.specc_output_names)
    output_shapes = {name: compiled.typed.shape_of(v) for name, v in compiled.typed.graph.outputs}
    example = example_inputs(inputs, cfg.seed)
    export_dir = run_dir / "export"
    artifacts: list[Artifact] = []
    runners: dict[str, parity.Runner] = {}
    errors: list[ExportError] = []
    for fmt in chosen:
        try:
            art, runner = _produce(fmt, module, example, spec, cfg, compiled, output_names, output_shapes,
                                   export_dir, verify, say)
        except ExportError as e:
            errors.append(e)
            say(f"{fmt:<12} failed (see below)")
            continue
        artifacts.append(art)
        runners[fmt] = runner
        if not verify:
            say(art.line())
        for note in art.notes:
            say(f"             note: {note}")
        if art.warnings:
            say(f"             {art.warnings}")
    grid = size_grid(inputs, cfg.dims)
    checks = parity.run_checks(module, inputs, output_names, runners, grid, cfg.atol, cfg.rtol, cfg.seed)
    # honest: at least one check, every check passed, and no format failed to be produced
    passed = bool(checks) and all(c.passed for c in checks) and not errors
    rep = parity.ParityReport(passed, checks, cfg.atol, cfg.rtol, trained=trained)
    rep.artifacts = [{"format": a.format, "path": str(a.path) if a.path else None, "seconds": round(a.seconds, 3),
                      "megabytes": round(a.megabytes, 3), "method": a.method, "notes": a.notes,
                      "warnings": a.warnings} for a in artifacts]
    rep.errors = [{"format": e.format, "message": e.message, "hint": e.hint} for e in errors]
    rep.environment = parity.environment(cfg.opset, dict(to_onnx.provider_info(), specc=__version__,
                                                         spec_hash=spec.hash))
    if latency and runners:
        timed = {"eager": lambda xs: module(*xs)}
        timed.update({k: v for k, v in runners.items() if k in ("onnx", "pt2")})
        rep.latency_ms = parity.latency(inputs, timed, _latency_sizes(grid))
    if "compile" in runners:
        xs = make_inputs(inputs, grid[-1], cfg.seed)
        rep.compile_speedup = round(compile_check.speed_ratio(lambda: module(*xs), lambda: runners["compile"](xs)), 3)
    if any(not c.passed for c in checks):
        rep.divergence = _divergence(rep, module, inputs, cfg, export_dir)
    _write_reports(rep, export_dir, spec.name, "onnx" in runners)
    return rep


def _produce(fmt: str, module: Any, example: list, spec: Any, cfg: ExportConfig, compiled: Any,
             output_names: list[str], output_shapes: dict, export_dir: Path, verify: bool,
             say: Callable[[str], None]) -> tuple[Artifact, parity.Runner]:
    if fmt == "compile":
        return compile_check.compile_module(module, example)
    path = export_dir / FILES[fmt]
    if verify:
        if not path.is_file():
            raise ExportError(fmt, f"{path} does not exist", "export it first: specc export --" + fmt)
        art = Artifact(fmt, path, 0.0, ["verified as found on disk"], "", "verify")
    elif fmt == "onnx":
        meta = {"spec_hash": spec.hash, "version": __version__, "spec_name": spec.name}
        art = to_onnx.export(module, example, spec.inputs, output_names, output_shapes, path, cfg.opset,
                             cfg.exporter, meta, compiled.typed.bytes, on_step=_onnx_step)
    elif fmt == "pt2":
        art = to_pt2.export(module, example, spec.inputs, path)
    else:
        art = to_torchscript.export(module, example, path)
    loader = {"onnx": to_onnx.load, "pt2": to_pt2.load, "torchscript": to_torchscript.load}[fmt]
    try:
        return art, loader(path)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(fmt, f"{path} cannot be loaded: {first_line(e, 200)}",
                          "export it again") from None


def _onnx_step(step: str) -> None:
    """The exporter's `[torch.onnx] ...` lines, folded into one line that updates in a terminal."""
    if sys.stdout.isatty():
        sys.__stdout__.write(f"\r\x1b[Konnx: {step[:100]}")
        sys.__stdout__.flush()
        if step.endswith("✅") and "Optimize" in step:
            sys.__stdout__.write("\r\x1b[K")


def _check_plugin_formats(compiled: Any, formats: tuple[str, ...]) -> None:
    from compiler.errors import Collector
    c = Collector()
    for node in compiled.typed.graph.nodes:
        for fmt in formats:
            if fmt not in node.op.formats:
                c.error(node.loc, f"{node.op.name} '{node.path}' cannot be exported to {fmt}",
                        f"its plugin ({node.op.plugin or 'specc'}) declares formats: {', '.join(sorted(node.op.formats))}")
    c.raise_if_any()


def _latency_sizes(grid: list[dict[str, int]]) -> list[dict[str, int]]:
    if not grid or not grid[0]:
        return grid[:1]
    key = "batch" if "batch" in grid[0] else next(iter(grid[0]))
    lo = min(grid, key=lambda s: s[key])
    hi = max(grid, key=lambda s: s[key])
    return [lo] if lo == hi else [lo, hi]


def _divergence(rep: parity.ParityReport, module: Any, inputs: Any, cfg: ExportConfig,
                export_dir: Path) -> dict[str, Any] | None:
    failing = next(c for c in rep.checks if not c.passed)
    path = export_dir / FILES[failing.format] if failing.format in FILES else None
    xs = make_inputs(inputs, failing.sizes, cfg.seed)
    try:
        found = locate.first_divergence(failing.format, path, module, xs, cfg.atol, cfg.rtol)
    except Exception as e:  # the search is a diagnosis aid: its failure must not hide the verdict
        return {"format": failing.format, "node": "?", "op": "?", "location": "", "file": "", "line": 0,
                "how": f"could not compare intermediate outputs: {first_line(e, 200)}", "max_abs_err": 0.0}
    if found is not None:
        found["format"] = failing.format
        found["sizes"] = failing.sizes
    return found


def _write_reports(rep: parity.ParityReport, export_dir: Path, name: str, has_onnx: bool) -> None:
    export_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(export_dir / "parity.json", reports.to_json(rep))
    atomic_write_text(export_dir / "parity.md", reports.to_markdown(rep, name))
    onnx_path = export_dir / FILES["onnx"]
    if has_onnx and onnx_path.is_file():
        to_onnx.record_verdict(onnx_path, "passed" if all(c.passed for c in rep.checks if c.format == "onnx") else "failed")


def print_report(rep: parity.ParityReport) -> None:
    """The console table: one row per format and size."""
    from rich.table import Table
    from rich.text import Text

    from .render import console
    table = Table(header_style="bold", title="parity", title_justify="left")
    for col in ("format", "sizes", "max abs err", "max rel err", "out of tol", "NaN/Inf", "verdict"):
        table.add_column(col, justify="right" if "err" in col or col == "out of tol" else "left")
    for c in rep.checks:
        table.add_row(c.format, Text(", ".join(f"{k}={v}" for k, v in c.sizes.items()) or "fixed"),
                      f"{c.max_abs_err:.2e}", f"{c.max_rel_err:.2e}", f"{c.out_of_tolerance:.2%}", f"{c.nan}/{c.inf}",
                      Text("pass", style="green") if c.passed else Text("FAIL" + (f" ({c.error})" if c.error else ""),
                                                                        style="bold red"))
    con = console()
    if rep.checks:
        con.print(table)
    if rep.latency_ms:
        parts = [f"{k} " + ", ".join(f"{s}: {v:.2f} ms" for s, v in d.items()) for k, d in rep.latency_ms.items()]
        con.print(Text("latency: " + " | ".join(parts)))
    if rep.compile_speedup is not None:
        con.print(Text(f"torch.compile: {rep.compile_speedup:.2f}x eager speed (warm)"))
    if rep.divergence:
        d = rep.divergence
        con.print(Text(f"first diverging node: {d['node']} ({d['op']}) at {d['location']}: {d['how']}"))
