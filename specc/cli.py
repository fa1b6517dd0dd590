"""The `specc` command: one typed function per command, each a thin call into `specc.api`.

Importing this module must not import torch: `specc --help` stays instant. Heavy modules are
imported inside the commands.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from compiler.errors import SpecError

app = typer.Typer(
    name="specc",
    help="Declarative model specs -> torch.fx modules, one training loop, exports with parity checks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a param (depth=6) or a dotted spec path (train.optimizer.lr=0.01). Repeatable.")]


def _guard(fn: Callable[[], int | None]) -> None:
    """Known errors: the diagnostics and exit 2. Bugs: one line, the traceback in a log, exit 70."""
    try:
        code = fn() or 0
    except SpecError as e:
        if os.environ.get("SPECC_DEBUG") == "1":
            traceback.print_exc()
        from .render import print_spec_error
        print_spec_error(e)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130)
    except typer.Exit:
        raise
    except Exception as e:
        from exporters.errors import WriteError
        if isinstance(e, WriteError):
            print(f"error: {e}\nhint: free some disk space (or raise the file-size limit) and run it again; "
                  "files already there were left as they were", file=sys.stderr)
            raise typer.Exit(1)
        if os.environ.get("SPECC_DEBUG") == "1":
            raise
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        log = Path(tempfile.gettempdir()) / f"specc-crash-{stamp}-{os.getpid()}.log"
        log.write_text(traceback.format_exc())
        print(f"specc: internal error (a bug in specc); the traceback is in {log}", file=sys.stderr)
        raise typer.Exit(70)
    raise typer.Exit(code)


@app.command(epilog="Example: specc build specs/transformer_encoder.yaml --set depth=2")
def build(
    spec: Annotated[str, typer.Argument(help="The spec file (.yaml).")],
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder to write (default: runs/<name>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start a trained run over.")] = False,
    emit_python: Annotated[Optional[Path], typer.Option("--emit-python", help="Also write standalone PyTorch source.")] = None,
    graph: Annotated[Optional[Path], typer.Option("--graph", help="Also draw the graph: .svg/.png (Graphviz), .dot, .md (Mermaid).")] = None,
    code: Annotated[bool, typer.Option("--code", help="Print the generated forward().")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary table.")] = False,
) -> None:
    """Check and compile a spec, print its summary, and write the run folder."""

    def run() -> None:
        from .api import build_run
        from .render import console, summary_table
        result = build_run(spec, set_, out, force)
        if not quiet:
            console().print(summary_table(result.compiled.summary))
        if code:
            print(result.compiled.module.code.strip())
        if emit_python is not None:
            from .api import emit_python as emit
            emit(result.compiled, emit_python)
            print(f"wrote {emit_python}")
        if graph is not None:
            from .api import write_graph
            write_graph(result.compiled, graph)
            print(f"wrote {graph}")
        print(f"wrote {result.run_dir}/ (spec.yaml, summary.json, model.safetensors)")

    _guard(run)


@app.command(epilog="Examples: specc train specs/mlp2_zigzag.yaml   specc train --resume   specc train RUN --nproc 2")
def train(
    target: Annotated[Optional[str], typer.Argument(help="A spec file or a run folder (default: the latest run).")] = None,
    set_: SetOpt = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Train this many epochs in all.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start a trained run over.")] = False,
    nproc: Annotated[int, typer.Option("--nproc", help="DDP processes on this machine, through torchrun.")] = 1,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log to RUN/tensorboard.")] = False,
) -> None:
    """Train a spec with the shared loop: checkpoints every epoch, exact --resume, DDP with --nproc."""

    def run() -> int:
        from .distributed import WorkersFailed, check_nproc
        from .loop import TrainingDiverged
        from .trainer import train as train_run
        check_nproc(nproc)
        try:
            result = train_run(target, set_, epochs=epochs, device=device, resume=resume, force=force, nproc=nproc,
                               tensorboard=tensorboard)
        except TrainingDiverged as e:
            print(f"error: training diverged: {e}", file=sys.stderr)
            return 1
        except WorkersFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return 1 if e.code == 1 else 2 if e.code == 2 else 1
        if result.history:
            print(f"trained {result.run_dir} for {result.epochs} epochs: " +
                  ", ".join(f"{k} {v:.4g}" for k, v in result.final.items()
                            if isinstance(v, float) and k not in ("seconds", "samples_per_s", "lr")))
        return 0

    _guard(run)


@app.command(epilog="Examples: specc export --onnx   specc export runs/x --all --atol 1e-4   specc export --verify")
def export(
    target: Annotated[Optional[str], typer.Argument(help="A run folder or a spec file (default: the latest run).")] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="ONNX, checked in onnxruntime.")] = False,
    torchscript: Annotated[bool, typer.Option("--torchscript", help="TorchScript (deprecated in PyTorch 2.x).")] = False,
    pt2: Annotated[bool, typer.Option("--pt2", help="torch.export program (.pt2).")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile against eager.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="All four formats.")] = False,
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (default 18).")] = None,
    atol: Annotated[Optional[float], typer.Option("--atol", help="Absolute tolerance (default 1e-5).")] = None,
    rtol: Annotated[Optional[float], typer.Option("--rtol", help="Relative tolerance (default 1e-4).")] = None,
    exporter: Annotated[Optional[str], typer.Option("--exporter", help="ONNX exporter: dynamo (default) or legacy.")] = None,
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Exit 0 even if parity fails.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Re-check the artifacts already in RUN/export.")] = False,
) -> None:
    """Export a run, reload every artifact, check parity at every size, write export/parity.{json,md}."""

    def run() -> int:
        from .exporting import export as export_run, print_report
        from exporters.errors import ExportError
        chosen = [f for f, on in (("onnx", onnx), ("torchscript", torchscript), ("pt2", pt2), ("compile", compile_))
                  if on or all_]
        try:
            rep = export_run(target, chosen or None, opset=opset, atol=atol, rtol=rtol, exporter=exporter,
                             verify=verify)
        except ExportError as e:
            print(f"error: {e}\nhint: {e.hint}", file=sys.stderr)
            return 2
        print_report(rep)
        where = "export/parity.json"
        if not rep.passed:
            print(f"error: parity failed (see {where}); pass --allow-mismatch to accept it", file=sys.stderr)
            return 0 if allow_mismatch else 1
        if rep.errors:
            for e in rep.errors:
                print(f"error: {e['format']}: {e['message']}\nhint: {e['hint']}", file=sys.stderr)
            return 2
        print(f"parity passed: {len(rep.checks)} checks within atol {rep.atol:g}, rtol {rep.rtol:g}")
        return 0

    _guard(run)


@app.command(epilog="Example: specc diff specs/transformer_encoder.yaml runs/seed-transformer-encoder --set-b depth=6")
def diff(
    a: Annotated[str, typer.Argument(help="Spec file or run folder A (a run's weights are what would be loaded).")],
    b: Annotated[str, typer.Argument(help="Spec file or run folder B.")],
    set_a: Annotated[Optional[list[str]], typer.Option("--set-a", help="Override for A.")] = None,
    set_b: Annotated[Optional[list[str]], typer.Option("--set-b", help="Override for B.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    all_nodes: Annotated[bool, typer.Option("--all", help="List unchanged nodes and loading tensors too.")] = False,
) -> None:
    """Compare two specs or runs: node, shape and parameter changes, and checkpoint compatibility."""

    def run() -> None:
        from .api import diff as diff_specs
        result = diff_specs(a, b, set_a, set_b)
        if as_json:
            print(json.dumps(result, indent=2))
            return
        from .render import console, diff_tables
        for table in diff_tables(result, all_nodes):
            console().print(table)

    _guard(run)


@app.command()
def ops(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List every op with its arguments ([inferred] marks the input size specc fills in)."""

    def run() -> None:
        from compiler.ops import registry, signature
        from compiler.types import describe
        rows = []
        for name, op in registry().items():
            args = [{"name": a.name, "type": describe(a.type) or "any", "required": a.required,
                     "default": None if a.required else a.default,
                     "inferred": bool(op.infer and op.infer.arg == a.name)} for a in op.args.values()]
            lo, hi = op.inputs
            rows.append({"name": name, "kind": op.kind, "inputs": str(lo) if lo == hi else f"{lo}..{'n' if hi < 0 else hi}",
                         "arguments": signature(op).split("(", 1)[1][:-1], "args": args, "doc": op.doc,
                         "formats": sorted(op.formats), "plugin": op.plugin})
        if as_json:
            print(json.dumps([{k: v for k, v in r.items() if k != "arguments"} for r in rows], indent=2, default=str))
            return
        from .render import console, ops_table
        console().print(ops_table(rows))

    _guard(run)


@app.command()
def schema() -> None:
    """Print the JSON Schema of spec files (point your editor's YAML plugin at it)."""

    def run() -> None:
        from compiler.schema import spec_schema
        print(json.dumps(spec_schema(), indent=1))

    _guard(run)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
