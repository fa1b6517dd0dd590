"""The `specc` command: one typed function per command, each a thin call into `specc.api`.

Importing this module must not import torch: `specc --help` stays instant, and a spec error found
before shapes (YAML, keys, names, expressions) is reported without loading torch at all.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import signal
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
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")]


def _guard(fn: Callable[[], int | None]) -> None:
    """Known errors: the diagnostics and exit 2. Bugs: one line, the traceback in a log, exit 70."""
    try:
        code = fn() or 0
        sys.stdout.flush()
    except SpecError as e:
        if os.environ.get("SPECC_DEBUG") == "1":
            traceback.print_exc()
        from .render import print_spec_error
        print_spec_error(e)
        raise typer.Exit(2)
    except BrokenPipeError:
        _closed_stdout()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130)
    except typer.Exit:
        raise
    except Exception as e:
        _failure(e)
    raise typer.Exit(code)


def _closed_stdout() -> None:
    """The reader went away (`specc schema | head -1`): stop quietly, as `cat` would."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise typer.Exit(128 + signal.SIGPIPE)


def _failure(e: Exception) -> None:
    from exporters.errors import WriteError

    from .training.errors import stopped
    if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS or isinstance(e, WriteError):
        from .fsutil import write_hint
        reason = e.reason if isinstance(e, WriteError) else e.strerror or str(e)
        text = str(e) if isinstance(e, WriteError) else f"{e.filename}: {reason}" if e.filename else reason
        print(f"error: {text}\nhint: {write_hint(reason)}, and run it again; files already there were left as "
              "they were", file=sys.stderr)
        raise typer.Exit(1)
    code = stopped(e)
    if code is not None:
        raise typer.Exit(code)
    if os.environ.get("SPECC_DEBUG") == "1":
        raise e
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log = Path(tempfile.gettempdir()) / f"specc-crash-{stamp}-{os.getpid()}.log"
    log.write_text("".join(traceback.format_exception(e)))
    print(f"specc: internal error (a bug in specc); the traceback is in {log}", file=sys.stderr)
    raise typer.Exit(70)


# a folder that cannot be written, a full disk, a file-size limit: the user's to fix, not specc's bugs
_WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _say(quiet: bool) -> Callable[[str], None]:
    return (lambda s: None) if quiet else (lambda s: print(s, flush=True))


@app.command(epilog="Examples: specc build specs/transformer_encoder.yaml --set depth=2   "
             "specc build specs/zoo/resnet.yaml --set layers=[3,4,6,3] --set bottleneck=true --weights resnet50.pth   "
             "specc build specs/zoo/llama.yaml --weights ./Llama-3.2-1B")
def build(
    spec: Annotated[str, typer.Argument(help="The spec file (.yaml), or a run folder (to eject or draw it).")],
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder to write (default: runs/<name>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start a trained run over.")] = False,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Import weights strictly: .safetensors, a torch.save'd state_dict, or a Hugging Face save_pretrained folder (its config.json sets the params).")] = None,
    weights_map: Annotated[Optional[list[str]], typer.Option("--weights-map", help="Rename the file's keys: PREFIX to strip, or REGEX=REPLACEMENT. Repeatable.")] = None,
    emit_python: Annotated[Optional[Path], typer.Option("--emit-python", help="Also write standalone PyTorch source.")] = None,
    graph: Annotated[Optional[Path], typer.Option("--graph", help="Also draw the graph: .svg/.png (Graphviz), .dot, .md (Mermaid).")] = None,
    code: Annotated[bool, typer.Option("--code", help="Print the generated forward().")] = False,
    quiet: Quiet = False,
) -> None:
    """Check and compile a spec, print its summary, and write the run folder."""

    def run() -> None:
        from . import api
        from .render import console, summary_table
        say = _say(quiet)
        if api.is_run(spec) and not (set_ or out or force or weights):  # a run: use it as it is
            compiled, where = api.compiled_run(spec), None
        else:
            result = api.build_run(spec, set_, out, force=force, weights=weights, weights_map=weights_map or ())
            compiled, where = result.compiled, result.run_dir
        if not quiet:
            console().print(summary_table(compiled.summary))
        if code:
            print(compiled.module.code.strip())
        if emit_python is not None:
            api.emit_python(compiled, emit_python)
            say(f"wrote {emit_python}")
        if graph is not None:
            api.write_graph(compiled, graph)
            say(f"wrote {graph}")
        if where is not None:
            say(f"wrote {where}/ (spec.yaml, summary.json, model.safetensors)")

    _guard(run)


@app.command(epilog="Examples: specc train specs/mlp2_zigzag.yaml   specc train --resume   specc train RUN --nproc 2")
def train(
    target: Annotated[Optional[str], typer.Argument(help="A spec file or a run folder (default: the latest run).")] = None,
    set_: SetOpt = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Train this many epochs in all.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start a trained run over.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder for a spec (default: runs/<name>).")] = None,
    nproc: Annotated[int, typer.Option("--nproc", help="DDP processes on this machine, through torchrun.")] = 1,
    strategy: Annotated[Optional[str], typer.Option("--strategy", help="ddp (replicas) or fsdp (shards) across --nproc processes (default: train.strategy).")] = None,
    compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the training step (default: train.compile).")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log to RUN/tensorboard.")] = False,
    quiet: Quiet = False,
) -> None:
    """Train a spec with the shared loop: checkpoints, exact --resume, DDP or FSDP with --nproc."""

    def run() -> int:
        from . import api
        from .training.distributed import check_nproc, check_strategy
        check_nproc(nproc)
        check_strategy(strategy)
        result = api.train(target, set_, epochs=epochs, device=device, resume=resume, force=force, nproc=nproc,
                           tensorboard=tensorboard, compile=compile_, out=out, quiet=quiet, strategy=strategy)
        if result.history and result.speaks and not quiet:  # one line, from one process
            print(f"trained {result.run_dir} for {result.epochs} epochs: " +
                  ", ".join(f"{k} {v:.4g}" for k, v in result.final.items()
                            if isinstance(v, float) and k not in ("seconds", "samples_per_s", "lr")) +
                  (f"; its weights are epoch {result.weights_from_epoch}'s, the best"
                   if result.weights_from_epoch not in (None, result.epochs) else ""))
        return 0

    _guard(run)


@app.command(epilog="Examples: specc sweep specs/mlp2_zigzag.yaml --search train.optimizer.lr=loguniform(1e-4,1e-1) "
             "--search hidden=int(16,128) --trials 20   specc sweep SPEC --search dropout=uniform(0,0.5) --backend ray")
def sweep(
    spec: Annotated[str, typer.Argument(help="The spec file (.yaml) to search.")],
    search: Annotated[Optional[list[str]], typer.Option("--search", help="PATH=DIST, DIST one of loguniform(a,b) uniform(a,b) int(a,b) choice(x,y,...); PATH as for --set. Repeatable.")] = None,
    trials: Annotated[int, typer.Option("--trials", help="Trials in all (a rerun with more adds trials).")] = 20,
    metric: Annotated[str, typer.Option("--metric", help="The metrics.csv column to optimize, at the last epoch.")] = "val_loss",
    mode: Annotated[str, typer.Option("--mode", help="min or max.")] = "min",
    out: Annotated[Optional[Path], typer.Option("--out", help="Sweep folder (default: sweeps/<name>).")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Trials at once.")] = 1,
    backend: Annotated[str, typer.Option("--backend", help="optuna (embedded, study in DIR) or ray (Ray Tune).")] = "optuna",
    address: Annotated[Optional[str], typer.Option("--address", help="A Ray cluster (default: a local Ray).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs per trial (default: train.epochs).")] = None,
    set_: SetOpt = None,
    quiet: Quiet = False,
) -> None:
    """Search params and train settings: seeded trials, pruned on per-epoch reports, the best spec written."""

    def run() -> None:
        from . import api
        result = api.sweep(spec, search or [], trials, metric=metric, mode=mode, out=out, parallel=parallel,
                           backend=backend, address=address, params=set_ or (), epochs=epochs)
        if quiet:
            return
        counts = ", ".join(f"{n} {state}" for state, n in result.counts.items())
        print(f"{len(result.trials)} trials ({counts}); wrote {result.out}/trials.csv, history.png")
        best = result.best
        if best is None:
            print("no trial completed: see the error column of trials.csv")
            return
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.values.items())
        print(f"best: trial {best.number}, {result.metric} {best.metric:.4g} ({values}); "
              f"spec in {result.out}/best.yaml, run in {best.run_dir}")

    _guard(run)


@app.command(epilog="Examples: specc export --onnx   specc export runs/x --all --atol 1e-4   specc export --verify   "
             "specc export --onnx --quantize int8 --max-drop 0.5   specc export runs/llama --onnx --with-past")
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
    quantize: Annotated[Optional[str], typer.Option("--quantize", help="Also write export/model.int8.onnx (dynamic int8), checked on the task metric.")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write export/model.fp16.onnx, checked on the task metric.")] = False,
    optimize: Annotated[Optional[str], typer.Option("--optimize", help="Also save onnxruntime's optimized graph: O1, O2 or O3.")] = None,
    max_drop: Annotated[float, typer.Option("--max-drop", help="Largest metric drop a variant may show: accuracy points, or percent relative error.")] = 1.0,
    with_past: Annotated[bool, typer.Option("--with-past", help="Write export/model_with_past.onnx (KV cache in and out, Optimum's names) and genai_config.json for a causal LM, stepped token by token against the eager model; alone, only that file.")] = False,
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Exit 0 even if parity fails.")] = False,
    triton: Annotated[bool, typer.Option("--triton", help="Also write a Triton model repository: export/triton/<name>/{config.pbtxt,1/model.onnx}.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Re-check the artifacts already in RUN/export.")] = False,
    quiet: Quiet = False,
) -> None:
    """Export a run, reload every artifact, check parity at every size, write export/parity.{json,md}."""

    def run() -> int:
        from . import api
        from .exporting import error_lines
        from .render import print_report
        chosen = [f for f, on in (("onnx", onnx), ("torchscript", torchscript), ("pt2", pt2), ("compile", compile_))
                  if on or all_]
        rep = api.export(target, chosen or None, opset=opset, atol=atol, rtol=rtol, exporter=exporter, verify=verify,
                         quantize=quantize, fp16=fp16, optimize=optimize, max_drop=max_drop, with_past=with_past,
                         out=_say(quiet), triton=triton)
        if not quiet:
            print_report(rep)
        for line in error_lines(rep):
            print(line, file=sys.stderr)
        if rep.errors:
            return 2
        if not rep.passed:
            print("error: parity failed (see export/parity.json); pass --allow-mismatch to accept it", file=sys.stderr)
            return 0 if allow_mismatch else 1
        if not quiet:
            values = sum(c.kind == "values" for c in rep.checks)
            metric = len(rep.checks) - values
            print(f"parity passed: {values} checks within atol {rep.atol:g}, rtol {rep.rtol:g}"
                  + (f", {metric} task-metric check{'s' if metric != 1 else ''}" if metric else "")
                  + (", declared shapes as the spec's" if rep.declared_shapes else ""))
        return 0

    _guard(run)


@app.command(epilog="Examples: specc predict --data new.csv   specc predict runs/pets --data photos/ --out pets.csv --onnx")
def predict(
    target: Annotated[Optional[str], typer.Argument(help="A trained run folder (default: the latest run).")] = None,
    data: Annotated[Path, typer.Option("--data", help="A csv/npz with the spec's features, an image folder, or a text file.")] = ...,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the CSV here (default: stdout).")] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Run export/model.onnx in onnxruntime instead of torch.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per forward pass.")] = 256,
    allow_unchecked: Annotated[bool, typer.Option("--allow-unchecked", help="With --onnx: use a file whose parity check did not pass (warns).")] = False,
) -> None:
    """Run a trained model on new data with the run's normalization; CSV out."""

    def run() -> None:
        from . import api
        result = api.predict(target, data, onnx=onnx, batch_size=batch_size, allow_unchecked=allow_unchecked)
        if out is None:
            sys.stdout.write(result.csv())
            return
        from .fsutil import atomic_write_text
        atomic_write_text(out, result.csv())
        print(f"wrote {out} ({len(result.rows)} rows)", file=sys.stderr)

    _guard(run)


@app.command(epilog="Examples: specc generate runs/llama --prompt '81 218 150' --tokens 32 --top-k 1\n\n"
                     "specc generate runs/tiny-shakespeare --prompt 'ROMEO:' --tokens 200 --top-p 0.9 --stop '\\n\\n'")
def generate(
    target: Annotated[Optional[str], typer.Argument(help="A causal language-model run (default: the latest run).")] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="Token ids ('81 218 150'), or text for runs with a "
                                        "tokenizer.json or text: data.")] = "\n",
    tokens: Annotated[int, typer.Option("--tokens", help="How many tokens to sample.")] = 100,
    temperature: Annotated[float, typer.Option("--temperature", help="Below 1: surer; above 1: more varied.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample from the k likeliest tokens only; 1 is greedy.")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Sample from the likeliest tokens that hold this "
                                                   "much probability.")] = None,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="Stop before this text (a token id without a "
                                                      "tokenizer); repeatable.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="The same seed and prompt give the same text.")] = 0,
    onnx: Annotated[bool, typer.Option("--onnx", help="Decode with export/model_with_past.onnx in onnxruntime.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when there is one) | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Sample from a causal language-model run through its KV cache, seeded and reproducible."""

    def run() -> None:
        from . import api
        pieces = api.stream(target, prompt, tokens=tokens, onnx=onnx, device=device, temperature=temperature,
                            top_k=top_k, top_p=top_p, stop=tuple(stop or ()), seed=seed)
        sys.stdout.write(prompt)
        for token in pieces:  # each token as it is decoded
            sys.stdout.write(token.text)
            sys.stdout.flush()
        sys.stdout.write("\n")

    _guard(run)


@app.command(epilog="Examples: specc serve runs/house   specc serve runs/house --onnx --max-batch 32   "
             "specc serve runs/house --host 0.0.0.0 --token $SECRET")
def serve(
    target: Annotated[Optional[str], typer.Argument(help="A run folder (default: the latest run).")] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Serve export/model.onnx in onnxruntime instead of torch.")] = False,
    allow_unchecked: Annotated[bool, typer.Option("--allow-unchecked", help="With --onnx: serve a file whose parity check did not pass (warns).")] = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback wants --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: a free one).")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Rows merged into one model run (1: no batching).")] = 16,
    batch_timeout_ms: Annotated[float, typer.Option("--batch-timeout-ms", help="Longest wait for requests still arriving to share a run.")] = 2.0,
    token: Annotated[Optional[str], typer.Option("--token", envvar="SPECC_TOKEN", help="Require 'Authorization: Bearer TOKEN' (env: SPECC_TOKEN).")] = None,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body, in bytes.")] = 8 << 20,
    client_timeout: Annotated[float, typer.Option("--client-timeout", help="Seconds a client may take to send a request.")] = 30.0,
    device: Annotated[str, typer.Option("--device", help="Where torch runs the model: auto (CUDA when there is one) | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Serve a run over HTTP: the Open Inference Protocol (v2), dynamic batching, /v1/predict and /v1/generate."""

    def run() -> int:
        from . import api
        return api.serve(target, onnx=onnx, allow_unchecked=allow_unchecked, host=host, port=port, max_batch=max_batch,
                         batch_timeout_ms=batch_timeout_ms, token=token, max_body=max_body,
                         client_timeout_s=client_timeout, device=device)

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
        from . import api
        result = api.diff(a, b, set_a, set_b)
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
        from .render import console, op_rows, ops_table
        rows = op_rows()
        if as_json:
            print(json.dumps([{k: v for k, v in r.items() if k != "arguments"} for r in rows], indent=2, default=str))
            return
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
