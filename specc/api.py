"""The public Python API, a facade: the CLI is a thin layer over these functions, and nothing below
the CLI imports this module. Importing it does not import torch.

    import specc
    model = specc.build("specs/zoo/resnet.yaml", {"layers": [3, 4, 6, 3], "bottleneck": True})
    spec = specc.load("specs/transformer_encoder.yaml")
    result = specc.train("specs/mlp2_zigzag.yaml", epochs=5)
    report = specc.export("runs/seed-mlp2-zigzag", formats=("onnx",))
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from compiler.spec import Spec

from .runs import is_run, load  # noqa: F401  (re-exported; load: a path, YAML text, a dict, a run folder or a Spec -> the Spec)


def build(source: Any, params: Any = None, *, weights: Any = None, weights_map: Iterable[str] = ()) -> Any:
    """Compile a spec into a `torch.fx.GraphModule`, its weights seeded by `train.seed` (default 0), or
    imported strictly from `weights` (.safetensors or a torch.save'd state_dict).

    >>> model = specc.build("specs/mlp2_zigzag.yaml", {"hidden": 64})
    """
    from .building import Import, compile_with
    return compile_with(source, params, Import.of(weights, weights_map)).module


def compiled(source: Any, params: Any = None) -> Any:
    """Load and compile, returning the spec, typed graph, module and summary together (`Compiled`)."""
    from .building import compile_with
    return compile_with(source, params)


def compiled_run(run_dir: Any) -> Any:
    """A run's model with the weights it holds, without rebuilding the run."""
    from pathlib import Path

    from .building import compile_run
    return compile_run(Path(run_dir))


def emit_python(compiled_: Any, path: str | os.PathLike) -> Any:
    """Standalone PyTorch source for a compiled spec (`specc build --emit-python FILE`)."""
    from .building import emit_python as _emit
    return _emit(compiled_, path)


def write_graph(compiled_: Any, path: str | os.PathLike) -> Any:
    """A picture of the graph: .svg/.png (Graphviz), .dot, .md (Mermaid)."""
    from .building import write_graph as _write
    return _write(compiled_, path)


def build_run(source: Any, params: Any = None, out: str | os.PathLike | None = None, *, force: bool = False,
              weights: Any = None, weights_map: Iterable[str] = ()) -> Any:
    """`specc build`: compile, then write the run folder; returns a `BuildResult` (compiled, run_dir)."""
    from .building import Import, build_run as _build_run
    return _build_run(source, params, out, force, imported=Import.of(weights, weights_map))


def train(target: Any = None, params: Any = None, **options: Any) -> Any:
    """Train a spec or a run folder with the shared loop (DESIGN §3); returns a `TrainResult`.

    >>> result = specc.train("specs/mlp2_zigzag.yaml", epochs=5)
    >>> result.final["val_loss"]
    """
    from .training.session import train as _train
    return _train(target, params, **options)


def export(target: Any = None, formats: Any = None, **options: Any) -> Any:
    """Export a run to each format and check parity (DESIGN §4); returns a `ParityReport`. Without
    formats: the spec's `export.formats` (default onnx, torchscript, pt2). Options: opset, atol,
    rtol, exporter, verify, latency, quantize ("int8"), fp16, optimize ("O1"/"O2"/"O3"), max_drop,
    out (a function that prints a line).

    >>> report = specc.export("runs/seed-transformer-encoder", formats=("onnx",))
    >>> report.passed
    >>> specc.export("runs/blobs", ("onnx",), quantize="int8").checks[-1].metric
    """
    from .exporting import export as _export
    return _export(target, formats, **options)


def stream(target: Any = None, prompt: Any = "", tokens: int = 100, *, onnx: bool = False, device: str | None = None,
           **sampling: Any) -> Any:
    """`generate` one token at a time: an iterator of `Token(id, text)`, the texts concatenated after the
    prompt being the continuation (`specc generate` prints them as they come; servers send them as events).

    >>> for token in specc.stream("runs/gpt", "81 218 150", tokens=16, top_k=1): print(token.text, end="")
    """
    from .generating import Sampling, stream as _stream
    return _stream(target, prompt, tokens, Sampling.of(sampling), onnx, device)


def diff(a: Any, b: Any, params_a: Any = None, params_b: Any = None) -> dict:
    """Per-node changes from A to B, and which of A's weights would load into B (`specc diff`)."""
    from .diffing import diff as _diff
    return _diff(a, b, params_a, params_b)


def predict(target: Any = None, data: Any = None, onnx: bool = False, batch_size: int = 256,
            allow_unchecked: bool = False) -> Any:
    """A trained run's predictions for new data (`specc predict`); `.rows`, `.header`, `.csv()`.

    >>> specc.predict("runs/house", "new.csv").rows
    """
    from .predicting import predict as _predict
    return _predict(target, data, onnx=onnx, batch_size=batch_size, allow_unchecked=allow_unchecked)


def generate(target: Any = None, prompt: Any = "", tokens: int = 100, *, onnx: bool = False, device: str | None = None,
             **sampling: Any) -> Any:
    """The prompt and `tokens` sampled tokens from a causal LM run (`specc generate`), through the
    KV-cache decoder (or the ONNX export with past, `onnx=True`) on `device` (auto: CUDA when there is
    one; cpu, cuda, cuda:N); reproducible for a seed on one device. Sampling:
    temperature, top_k (1: greedy), top_p, stop, seed. Text in and out with a tokenizer.json or for a
    text: run, else token ids ("81 218 150"). A list of prompts runs as one batch and gives a list.

    >>> specc.generate("runs/gpt", "81 218 150", tokens=16, top_k=1)
    """
    from .generating import generate as _generate
    return _generate(target, prompt, tokens, onnx, device, **sampling)


def serve(target: Any = None, **options: Any) -> int:
    """`specc serve`: serve a run over HTTP until SIGINT or SIGTERM (then 0). Options are
    `ServeOptions` fields: onnx, allow_unchecked, device, host, port, max_batch, batch_timeout_ms,
    token, max_body, client_timeout_s.

    >>> specc.serve("runs/house", port=8000, max_batch=32)
    """
    from .serving.server import ServeOptions, serve as _serve
    return _serve(target, ServeOptions(**options))


def sweep(spec: Any, search: Iterable[str], trials: int = 20, **options: Any) -> Any:
    """Search a spec's params and train settings (`specc sweep`); returns a `SweepResult` (trials,
    best). `search`: "PATH=DIST" strings, DIST one of loguniform(a,b), uniform(a,b), int(a,b),
    choice(x,y,...). Options: metric ("val_loss"), mode ("min"), out, parallel, backend ("optuna" or
    "ray"), address, params (--set strings every trial shares), epochs.

    >>> result = specc.sweep("specs/mlp2_zigzag.yaml", ["train.optimizer.lr=loguniform(1e-4,1e-1)"], trials=10)
    >>> result.best.values, result.best.metric
    """
    from .sweeping import sweep as _sweep
    return _sweep(spec, search, trials, **options)


__all__ = ["Spec", "load", "build", "compiled", "compiled_run", "build_run", "emit_python", "write_graph", "train",
           "export", "diff", "predict", "generate", "serve", "sweep", "stream"]
