"""`specc export`: export a run to each format, reload every artifact, check parity, write the report.

    report = specc.export("runs/seed-transformer-encoder", formats=("onnx", "pt2"))
    report.passed
    report = specc.export("runs/blobs", ("onnx",), quantize="int8")   # + export/model.int8.onnx

The pipeline reads top to bottom in `export`: the run's model becomes an `ExportJob`; each format is
produced and reloaded from disk; parity runs at every size (values, declared shapes); deployment
variants are checked on the task metric; the reports are written. Torch's and the exporters' own
warnings go to parity.md, not the console.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compiler.errors import Diagnostic, SpecError, file_loc, first_line
from compiler.export_section import FORMATS, ExportConfig
from exporters import compiled as compile_check
from exporters import locate, parity, report as reports, to_onnx, to_pt2, to_torchscript, variants
from exporters.artifact import Artifact, staged_export
from exporters.capture import capture
from exporters.declared import DeclaredShapes, onnx_shapes, pt2_shapes
from exporters.errors import ExportError
from exporters.inputs import corners, make_inputs, size_grid
from exporters.job import FILES, ExportJob

from . import __version__, runs
from .building import compile_run, ensure_built
from .fsutil import atomic_write_text

EXPORTERS = {"onnx": to_onnx.export, "pt2": to_pt2.export, "torchscript": to_torchscript.export}
LOADERS = {"onnx": to_onnx.load, "pt2": to_pt2.load, "torchscript": to_torchscript.load}


@dataclass(frozen=True)
class ExportOptions:
    """The command line's side of an export (DESIGN §5); None keeps the spec's `export:` value."""

    opset: int | None = None
    atol: float | None = None
    rtol: float | None = None
    exporter: str | None = None
    verify: bool = False  # re-check the files already in export/
    latency: bool = True
    quantize: str | None = None  # int8
    fp16: bool = False
    optimize: str | None = None  # O1 | O2 | O3
    max_drop: float = 1.0  # accuracy points, or percent relative error
    triton: bool = False  # also write export/triton/<name>/ from the checked ONNX file
    with_past: bool = False  # also export/model_with_past.onnx (issue 16), stepped against the eager model

    def deployments(self) -> list[str]:
        if self.quantize is not None and self.quantize != "int8":
            raise SpecError.at(file_loc("--quantize"), f"unknown quantization {self.quantize!r}", "--quantize int8")
        if self.optimize is not None and self.optimize not in variants.LEVELS:
            raise SpecError.at(file_loc("--optimize"), f"unknown optimization level {self.optimize!r}", "O1, O2 or O3")
        if self.max_drop < 0:
            raise SpecError.at(file_loc("--max-drop"), f"--max-drop must be ≥ 0, got {self.max_drop}", "--max-drop 1")
        return [v for v, on in (("int8", self.quantize), ("fp16", self.fp16), (self.optimize, self.optimize)) if on]


def _run_dir(target: Any) -> Path:
    """The run to export: the target run, or the run of the target spec (built first if needed)."""
    run_dir, spec, origin = runs.run_of(target)
    if run_dir is not None:
        return run_dir
    run_dir = runs.RUNS / spec.name
    ensure_built(spec, run_dir, origin)
    return run_dir


def export(target: Any = None, formats: tuple[str, ...] | list[str] | None = None, *,
           out: Callable[[str], None] | None = None, **options: Any) -> parity.ParityReport:
    """Export a run (or a spec's run), check every artifact against the eager model, write the reports.
    `options` are `ExportOptions` fields: opset, atol, rtol, exporter, verify, latency, quantize,
    fp16, optimize, max_drop."""
    opts = ExportOptions(**options)
    say = out or (lambda s: print(s, flush=True))
    run_dir = _run_dir(target)
    compiled = compile_run(run_dir)
    cfg = compiled.spec.export.override(opset=opts.opset, atol=opts.atol, rtol=opts.rtol, exporter=opts.exporter)
    final = run_dir / "export"
    wanted = opts.deployments() or (_found_variants(final) if opts.verify and not formats else [])
    if opts.verify and not formats:
        chosen = _verified_formats(final, wanted)
    elif opts.with_past and not formats and not wanted:
        chosen = ()
    else:
        chosen = _formats(formats, cfg, wanted + (["triton"] if opts.triton else []), say)
    _check_plugin_formats(compiled, chosen)
    if opts.with_past:  # alone (`specc export RUN --with-past`), it is the only file written
        from compiler.kvcache import plan
        plan(compiled)  # not a causal LM: exit 2 before anything is written
    trained = runs.is_trained(run_dir) and runs.stopped_part_way(run_dir) is None
    if not trained:
        say(f"note: {run_dir} was never trained" + (" to the end" if runs.is_trained(run_dir) else "") +
            "; exporting its initial weights")
    before = _artifact_files(final)
    with staged_export(final, keep=opts.verify) as stage:  # all or nothing: export/ changes only at the end
        session = _Session(_job(compiled, cfg, stage), opts, lambda s: say(s.replace(str(stage), str(final))))
        with capture(stdout=False) as quiet:  # torch's warnings go to parity.md, not the console
            rep = _produce_and_check(session, compiled, chosen, wanted, trained)
        if quiet.summary():
            rep.warnings["export"] = quiet.summary()
        _relocate(rep, stage, final)
        _write_reports(rep, stage, compiled.spec.name, "onnx" in session.runners)
        gone = sorted(before - _artifact_files(stage))
    for name in gone:
        say(f"note: removed {final / name} from an earlier export: export/ holds what this export made and checked")
    if opts.triton:
        _triton(run_dir, say)
    return rep


def _produce_and_check(session: "_Session", compiled: Any, chosen: tuple, wanted: list, trained: bool) -> Any:
    """Every format produced and checked, then --with-past, the deployment variants and latency."""
    session.produce(chosen)
    rep = session.check(trained)
    if session.opts.with_past:
        _with_past(session, compiled, rep)
    if wanted and "onnx" in session.runners:
        session.deploy(rep, wanted, _validation(compiled, session.say))
    rep.passed = parity.verdict(rep.checks, rep.declared_shapes, rep.errors)
    if session.opts.latency and session.runners:
        session.measure(rep)
    return rep


def _triton(run_dir: Path, say: Callable[[str], None]) -> None:
    """export/triton/<name>/ from the ONNX file, only when its parity passed."""
    from .serving.model import triton_repository
    try:
        path = triton_repository(run_dir)
    except SpecError as e:
        say(f"{'triton':<12} not written: {e.diagnostics[0].message}")
        return
    say(f"{'triton':<12} {path}/ (config.pbtxt, 1/model.onnx)")


def _with_past(session: "_Session", compiled: Any, rep: parity.ParityReport) -> None:
    """--with-past: export/model_with_past.onnx, stepped in onnxruntime against the eager model."""
    from exporters import with_past

    from .codecs import special_tokens
    job = session.job
    try:
        path = job.export_dir / with_past.FILE
        art = _found("onnx-with-past", path) if session.opts.verify else \
            with_past.export(compiled, job.export_dir, job.config.opset, job.metadata, special_tokens(job.export_dir.parent))
        session._tell(art)
        rep.artifacts.append(_artifact_row(art))
        check = with_past.check(compiled, path, job.config.atol, job.config.rtol)
        rep.checks.append(check)
        to_onnx.record_verdict(path, "passed" if check.passed else "failed")
    except ExportError as e:
        session.errors.append(e)
        rep.errors.append(e.as_dict())
        rep.failures.append(e)
        session.say("onnx-with-past failed (see below)")


def _artifact_files(folder: Path) -> set[str]:
    names = set(FILES.values()) | set(variants.FILES.values())
    return {n for n in names if (folder / n).is_file()} if folder.is_dir() else set()


def _found_variants(final: Path) -> list[str]:
    """--verify without flags: the variants whose files are there."""
    return [v for v, name in variants.FILES.items() if (final / name).is_file()]


def _verified_formats(final: Path, wanted: list[str]) -> tuple[str, ...]:
    """--verify without a format flag checks what exists; an empty export/ is an error."""
    found = tuple(f for f, name in FILES.items() if (final / name).is_file())
    if not found:
        raise SpecError.at(file_loc(str(final)), "there is nothing to verify: no exported model is here",
                           f"export first: specc export {final.parent} --onnx")
    if wanted and "onnx" not in found:
        raise SpecError.at(file_loc(str(final / FILES["onnx"])), "the variants found have no fp32 ONNX file beside "
                           "them to be checked against", f"export again: specc export {final.parent} --onnx")
    return found


def _relocate(rep: parity.ParityReport, stage: Path, final: Path) -> None:
    """The report names files where they will be, not in the temp folder they were checked in."""
    def moved(text: Any) -> Any:
        return text.replace(str(stage), str(final)) if isinstance(text, str) else text

    for row in rep.artifacts + rep.errors:
        for k, v in row.items():
            row[k] = [moved(x) for x in v] if isinstance(v, list) else moved(v)
    for e in rep.failures:
        e.message, e.hint = moved(e.message), moved(e.hint)
    rep.notes = [moved(n) for n in rep.notes]
    rep.warnings = {k: moved(v) for k, v in rep.warnings.items()}
    if rep.divergence:
        rep.divergence = {k: moved(v) for k, v in rep.divergence.items()}


def _formats(formats: Any, cfg: ExportConfig, wanted: list[str], say: Callable[[str], None]) -> tuple[str, ...]:
    chosen = tuple(formats) if formats else cfg.formats
    for f in chosen:
        if f not in FORMATS:
            raise SpecError.at(file_loc("--format"), f"unknown format {f!r}", f"formats: {', '.join(FORMATS)}")
    if wanted and "onnx" not in chosen:
        say(f"note: {', '.join(wanted)} {'is a variant' if len(wanted) == 1 else 'are variants'} of the ONNX file: "
            "exporting onnx too")
        chosen = ("onnx",) + chosen
    return chosen


def _job(compiled: Any, cfg: ExportConfig, export_dir: Path) -> ExportJob:
    spec, typed, module = compiled.spec, compiled.typed, compiled.module
    module.train(False)  # eval mode
    shapes = {path: info.shape for path, info in typed.info.items()}
    outputs = {name: typed.shape_of(v) for name, v in typed.graph.outputs}
    meta = {"spec_hash": spec.hash, "version": __version__, "spec_name": spec.name}
    return ExportJob(module, spec.inputs, outputs, export_dir, cfg, typed.dims, meta, shapes, typed.bytes,
                     _onnx_step)


class _Session:
    """One export's state: the job, what each format produced, and how to run it."""

    def __init__(self, job: ExportJob, opts: ExportOptions, say: Callable[[str], None]):
        self.job, self.opts, self.say = job, opts, say
        self.artifacts: list[Artifact] = []
        self.runners: dict[str, parity.Runner] = {}
        self.errors: list[ExportError] = []

    def produce(self, chosen: tuple[str, ...]) -> None:
        for fmt in chosen:
            try:
                art, runner = self._one(fmt)
            except ExportError as e:
                self.errors.append(e)
                self.say(f"{fmt:<12} failed (see below)")
                continue
            self.artifacts.append(art)
            self.runners[fmt] = runner
            self._tell(art)

    def _tell(self, art: Artifact) -> None:
        if not self.opts.verify:
            self.say(art.line())
        for note in art.notes:
            self.say(f"             note: {note}")
        d = art.declared
        if d is not None and (d.repaired or not d.passed):
            what = "; ".join(d.problems()) or "repaired from the spec: " + ", ".join(
                f"{v.kind} '{v.name}' {v.declared} -> {v.expected}" for v in d.values if v.repaired)
            self.say(f"             declared shapes: {what}")

    def _one(self, fmt: str) -> tuple[Artifact, parity.Runner]:
        if fmt == "compile":
            return compile_check.compile_module(self.job)
        path = self.job.path(fmt)
        if self.opts.verify:
            art = _found(fmt, path)
        else:
            art = EXPORTERS[fmt](self.job)
        try:
            runner = LOADERS[fmt](path)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(fmt, f"{path} cannot be loaded: {first_line(e, 200)}", "export it again") from None
        if self.opts.verify:
            art.declared = _declared_on_disk(fmt, path, self.job)
        return art, runner

    def check(self, trained: bool) -> parity.ParityReport:
        job = self.job
        grid = size_grid(job.inputs, job.config.dims, job.dims)
        checks = parity.run_checks(job, self.runners, grid)
        declared = [a.declared.as_dict() for a in self.artifacts if a.declared is not None]
        rep = parity.ParityReport(False, checks, job.config.atol, job.config.rtol, declared, trained=trained)
        rep.artifacts = [_artifact_row(a) for a in self.artifacts]
        rep.errors = [e.as_dict() for e in self.errors]
        rep.failures = self.errors  # the exceptions, for the command line's located messages
        rep.warnings = {a.format: a.warnings for a in self.artifacts if a.warnings}
        rep.environment = parity.environment(job.config.opset, dict(to_onnx.provider_info(), specc=__version__,
                                                                    spec_hash=job.metadata.get("spec_hash", "")))
        if any(not c.passed for c in checks):
            rep.divergence = _divergence(rep, job)
        return rep

    def deploy(self, rep: parity.ParityReport, wanted: list[str], validation: Any) -> None:
        data, why = validation
        if data is None:
            rep.notes.append(f"{why}: the variants are compared with fp32 on seeded inputs instead of a task metric")
            self.say(f"note: {why}; the variants are compared with fp32 on seeded inputs (relative error), not "
                     "on a task metric")
        for v in wanted:
            try:
                art = _found(variants.variant_format(v), variants.path(self.job, v)) if self.opts.verify \
                    else variants.produce(v, self.job, data)
                c = variants.check(v, art, self.job, data, self.opts.max_drop)
            except ExportError as e:
                self.errors.append(e)
                rep.errors.append(e.as_dict())
                self.say(f"{variants.variant_format(v):<12} failed (see below)")
                continue
            self._tell(art)
            slower = variants.speed_verdict(c)
            if slower:
                self.say(f"             note: {slower}")
            rep.checks.append(c)
            rep.artifacts.append(_artifact_row(art))
            if art.warnings:
                rep.warnings[art.format] = art.warnings

    def measure(self, rep: parity.ParityReport) -> None:
        job = self.job
        timed = {"eager": lambda xs: job.module(*xs)}
        timed.update({k: v for k, v in self.runners.items() if k in ("onnx", "pt2")})
        grid = size_grid(job.inputs, job.config.dims, job.dims)
        rep.latency_ms = parity.latency(job.inputs, timed, corners(grid))
        if "compile" in self.runners:
            xs = make_inputs(job.inputs, grid[-1], job.config.seed)
            rep.compile_speedup = round(compile_check.speed_ratio(lambda: job.module(*xs),
                                                                  lambda: self.runners["compile"](xs)), 3)


def _found(fmt: str, path: Path) -> Artifact:
    if not path.is_file():
        flag = "--" + fmt if fmt in FILES else "the variant's flag"
        raise ExportError(fmt, f"{path} does not exist", f"export it first: specc export {flag}")
    return Artifact(fmt, path, 0.0, ["verified as found on disk"], "", "verify")


def _declared_on_disk(fmt: str, path: Path, job: ExportJob) -> DeclaredShapes | None:
    """--verify: the file's own declarations, checked without repairing anything."""
    if fmt == "pt2":
        return pt2_shapes(to_pt2.load_program(path), job)
    if fmt != "onnx":
        return None
    import onnx
    d = onnx_shapes(onnx.load(str(path), load_external_data=False), job.inputs, job.outputs)
    for v in d.values:
        if v.repaired:
            v.repaired, v.passed = False, False
            v.problem = f"{v.kind} '{v.name}' is declared {v.declared} in the file, the spec has {v.expected}"
    return d


def _artifact_row(a: Artifact) -> dict[str, Any]:
    return {"format": a.format, "path": str(a.path) if a.path else None, "seconds": round(a.seconds, 3),
            "megabytes": round(a.megabytes, 3), "method": a.method, "notes": a.notes}


def _validation(compiled: Any, say: Callable[[str], None]) -> tuple[Any, str]:
    """The run's validation split for the task metric, or (None, why there is none). Read only."""
    spec = compiled.spec
    if spec.train is None:
        return None, "the spec has no train section"
    if not spec.train.data.val_split:
        return None, "the train section has no validation split (val_split: 0)"
    import torch

    from .training import targets
    from .training.data import load_data
    cfg = spec.train
    try:
        layout = targets.layout(spec, compiled.typed, cfg)
        data = load_data(cfg.data, spec, layout.task, layout.classes, cfg.seed)
    except SpecError as e:
        return None, f"the validation data cannot be read ({first_line(e, 200)})"
    if layout.target is None:
        layout = targets.layout(spec, compiled.typed, cfg, data.target_shape)
    if data.val is None:
        return None, "the data has no validation split"
    n = min(len(data.val), variants.MAX_SAMPLES)
    xs, y = zip(*data.val.batches(torch.arange(n), 512, torch.device("cpu")))
    inputs = [torch.cat([b[i] for b in xs]) for i in range(len(xs[0]))]
    source = f"validation split of {cfg.data.source} data, {n} samples, normalized as in training"
    return variants.Validation(inputs, torch.cat(list(y)), layout.task, layout.class_dim, source), ""


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


def _divergence(rep: parity.ParityReport, job: ExportJob) -> dict[str, Any] | None:
    failing = next(c for c in rep.checks if not c.passed)
    path = job.path(failing.format) if failing.format in FILES else None
    xs = make_inputs(job.inputs, failing.sizes, job.config.seed)
    try:
        found = locate.first_divergence(failing.format, path, job.module, xs, job.config.atol, job.config.rtol)
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
        ok = all(c.passed for c in rep.checks if c.format == "onnx") and \
            all(d["passed"] for d in rep.declared_shapes if d["format"] == "onnx")
        to_onnx.record_verdict(onnx_path, "passed" if ok else "failed")
    for c in rep.checks:
        if c.kind == "metric":
            v = c.format.split("-", 1)[1]
            if (export_dir / variants.FILES[v]).is_file():
                to_onnx.record_verdict(export_dir / variants.FILES[v], "passed" if c.passed else "failed")


def error_lines(rep: parity.ParityReport) -> list[str]:
    """What the command line prints to stderr: each format that failed (at its spec node when known),
    then each declared-shape and metric check that failed."""
    lines = []
    for e in rep.failures:
        text = f"{e.format}: {e.message}"
        lines.append(Diagnostic.at(e.loc, text, e.hint).format() if e.loc is not None
                     else f"error: {text}" + (f"\nhint: {e.hint}" if e.hint else ""))
    for d in rep.declared_shapes:
        lines += [f"error: {d['format']}: declared shapes: {v['problem']}" for v in d["values"] if not v["passed"]]
    for c in rep.checks:
        if c.kind == "metric" and not c.passed:
            m = c.metric or {}
            lines.append(f"error: {c.format}: {m.get('name')} {m.get('reference')} -> {m.get('quantized')} "
                         f"({m.get('drop')} {m.get('unit')} worse), more than --max-drop {m.get('max_drop')}")
    return lines
