"""Deployment variants of the fp32 ONNX file, each checked on the task metric.

- `int8`: onnxruntime's dynamic quantization (weights int8, activations quantized at run time),
  per channel where that measures better. Gemm nodes are rewritten as MatMul + Add first, since
  dynamic quantization covers MatMul and not Gemm (the dynamo exporter writes Linear as Gemm).
- `fp16`: onnxruntime's float16 converter, inputs and outputs kept float32; op types that have no
  float16 kernel on the CPU are kept float32.
- `O1`, `O2`, `O3`: onnxruntime's optimized graph (basic, extended, all), as the session saves it.

Element-wise tolerance does not fit a quantized model: the check compares the task metric (accuracy
for classification, MSE for regression) of fp32 and the variant on the run's validation split, and
fails when it drops by more than `max_drop` (accuracy points, or percent relative MSE). Without a
validation split it compares the variant with fp32 on seeded inputs (relative error, in percent),
and says so. Size and latency are measured against fp32.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from . import to_onnx
from .artifact import Artifact, staged
from .blame import root_cause
from .capture import capture
from .errors import ExportError
from .inputs import corners, make_inputs, size_grid
from .job import ExportJob
from .parity import Check, Comparison, compare, flatten, label, time_calls

VARIANTS = ("int8", "fp16", "O1", "O2", "O3")
FILES = {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx", "O1": "model.O1.onnx", "O2": "model.O2.onnx",
         "O3": "model.O3.onnx"}
LEVELS = {"O1": "ORT_ENABLE_BASIC", "O2": "ORT_ENABLE_EXTENDED", "O3": "ORT_ENABLE_ALL"}
MAX_SAMPLES = 4096


@dataclass
class Validation:
    """The run's validation split (normalized as in training), for the task metric."""

    inputs: list[torch.Tensor]
    target: torch.Tensor
    task: str  # classification | binary | regression
    class_dim: int = -1
    source: str = ""  # where it came from, for the report

    def metric(self, out: torch.Tensor) -> tuple[str, float]:
        if self.task == "classification":
            return "accuracy", float((out.argmax(self.class_dim) == self.target).double().mean())
        if self.task == "binary":
            return "accuracy", float(((out > 0).to(self.target.dtype) == self.target).double().mean())
        return "mse", float(((out.double() - self.target.double()) ** 2).mean())


def variant_format(variant: str) -> str:
    return f"onnx-{variant}"


def path(job: ExportJob, variant: str) -> Path:
    return job.export_dir / FILES[variant]


# --- producing ----------------------------------------------------------------------------------

def produce(variant: str, job: ExportJob) -> Artifact:
    """Write the variant next to model.onnx (which must exist) and return its artifact."""
    import time
    start = time.perf_counter()
    source, target = job.path("onnx"), path(job, variant)
    with capture(stdout_fd=True) as cap:
        try:
            notes = {"int8": _int8, "fp16": _fp16}.get(variant, _optimized)(source, target, variant)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(variant_format(variant), f"onnxruntime could not make the {variant} variant: "
                              f"{root_cause(e)}", "export the fp32 model only, or try another variant") from None
    return Artifact(variant_format(variant), target, time.perf_counter() - start, notes, cap.summary(), variant)


def _save(model: onnx.ModelProto, target: Path, source: Path, variant: str) -> None:
    meta = dict(to_onnx.metadata(source), variant=variant, parity="pending")
    to_onnx.set_metadata(model, meta)
    with staged(target) as tmp:
        onnx.save(model, str(tmp))


def gemm_as_matmul(model: onnx.ModelProto) -> int:
    """Gemm(A, W, C, transB) with a weight initializer becomes MatMul(A, W') + C, in place."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes, changed = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        name = f"{node.input[1]}_matmul"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(
            weight.T if attrs.get("transB", 0) else weight), name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_add"))
        changed += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return changed


def _int8(source: Path, target: Path, variant: str) -> list[str]:
    """Both per-tensor and per-channel weights are written; `choose_int8` keeps the better."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry
    model = onnx.load(str(source))
    rewritten = gemm_as_matmul(model)
    op_types = list(IntegerOpsRegistry)
    notes = [f"{rewritten} Gemm node(s) quantized as MatMul"] if rewritten else []
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        onnx.save(model, str(prepared))
        for per_channel in (False, True):
            out = Path(tmp) / f"q{int(per_channel)}.onnx"
            while True:
                quantize_dynamic(prepared, out, op_types_to_quantize=op_types, per_channel=per_channel,
                                 weight_type=QuantType.QInt8)
                missing = _unsupported(out)
                if missing is None:
                    break
                source_op = _QUANTIZED_FROM.get(missing, missing.replace("Integer", ""))
                if source_op not in op_types:
                    raise ExportError("onnx-int8", f"onnxruntime has no CPU kernel for {missing}", "export fp32")
                op_types.remove(source_op)
                notes.append(f"{source_op} stays float: onnxruntime has no CPU kernel for {missing}")
            _save(onnx.load(str(out)), _candidate(target, per_channel), source, variant)
    return list(dict.fromkeys(notes))


_QUANTIZED_FROM = {"DynamicQuantizeLSTM": "LSTM", "DynamicQuantizeMatMul": "MatMul", "QAttention": "Attention",
                   "QEmbedLayerNormalization": "EmbedLayerNormalization"}


def _candidate(target: Path, per_channel: bool) -> Path:
    return target if not per_channel else target.with_name(target.name.replace(".onnx", ".per-channel.onnx"))


def _unsupported(model_path: Path) -> str | None:
    """The op type onnxruntime has no kernel for in this model (None: it loads)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        m = re.search(r"implementation for (\w+)\(", str(e))
        if m:
            return m.group(1)
        raise
    return None


def _fp16(source: Path, target: Path, variant: str) -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    fp32 = onnx.load(str(source))
    blocked: list[str] = []
    for _ in range(32):
        model = convert_float_to_float16(fp32, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + blocked)
        with tempfile.TemporaryDirectory() as tmp:
            trial = Path(tmp) / "fp16.onnx"
            onnx.save(model, str(trial))
            missing = _unsupported(trial)
        if missing is None:
            _save(model, target, source, variant)
            return [f"kept float32 (no float16 CPU kernel): {', '.join(blocked)}"] if blocked else []
        fp32 = onnx.load(str(source))
        blocked.append(missing)
    raise ExportError(variant_format(variant), "too many op types lack a float16 CPU kernel", "export fp32")


def _optimized(source: Path, target: Path, variant: str) -> list[str]:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[variant])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts.optimized_model_filepath = str(out)
        to_onnx.session(source, options=opts)
        _save(onnx.load(str(out)), target, source, variant)
    return ["O3 includes layout changes for this CPU: the file is for machines like this one"] if variant == "O3" else []


# --- checking -----------------------------------------------------------------------------------

def _outputs(run: Callable, batches: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [flatten(run(xs))[0] for xs in batches]


def _batches(job: ExportJob, validation: Validation | None) -> list[list[torch.Tensor]]:
    if validation is not None:
        n = len(validation.target)
        return [[x[i:i + 512] for x in validation.inputs] for i in range(0, n, 512)]
    grid = size_grid(job.inputs, job.config.dims, job.dims)
    return [make_inputs(job.inputs, sizes, job.config.seed + 1) for sizes in grid]


def check(variant: str, art: Artifact, job: ExportJob, validation: Validation | None, max_drop: float) -> Check:
    """The variant against fp32 on the task metric (or seeded inputs), with size and latency."""
    fp32 = to_onnx.load(job.path("onnx"))
    candidates = [p for p in [art.path, _candidate(art.path, True)] if p.is_file()] if variant == "int8" else [art.path]
    batches = _batches(job, validation)
    ref = _outputs(fp32, batches)
    tol = (job.config.atol, job.config.rtol)
    try:
        scored = [(_score(ref, _outputs(to_onnx.load(p), batches), validation, tol), p) for p in candidates]
        (metric, comparison), best = min(scored, key=lambda s: (s[0][0]["drop"], s[1] != art.path))
        if best != art.path:  # per channel measured better: it becomes the variant's file
            os.replace(best, art.path)
            art.notes.append("weights quantized per channel (measured better than per tensor)")
    finally:  # never a stray candidate beside the variant, whatever happened
        for p in candidates[1:]:
            Path(p).unlink(missing_ok=True)
    metric["max_drop"] = max_drop
    c = Check.of(variant_format(variant), {}, _shapes(batches), comparison)
    c.kind, c.metric = "metric", metric
    c.passed = bool(metric["drop"] <= max_drop)
    c.size_mb = _sizes(job.path("onnx"), art.path)
    c.latency_ms = _latency(job, fp32, to_onnx.load(art.path))
    c.note = validation.source if validation is not None else ("no validation split: seeded inputs, relative "
                                                               "error against fp32 in percent")
    return c


def _score(ref: list[torch.Tensor], got: list[torch.Tensor], validation: Validation | None,
           tol: tuple[float, float]) -> tuple[dict, Comparison]:
    """The metric of fp32 (`ref`) and the variant (`got`), and their element-wise comparison (for information)."""
    comparison = compare(["out"], [torch.cat([r.flatten() for r in ref])], [torch.cat([g.flatten() for g in got])],
                         *tol)
    if validation is None:
        r, g = torch.cat([x.flatten() for x in ref]).double(), torch.cat([x.flatten() for x in got]).double()
        rel = float((g - r).norm() / r.norm().clamp_min(1e-12)) * 100
        return {"name": "relative error vs fp32 (%)", "reference": 0.0, "quantized": round(rel, 4),
                "drop": round(rel, 4), "unit": "%", "on": "seeded inputs"}, comparison
    name, a = validation.metric(torch.cat(ref))
    _, b = validation.metric(torch.cat(got))
    if name == "accuracy":
        drop, unit = (a - b) * 100, "points"
    else:
        drop, unit = (b - a) / max(a, 1e-12) * 100, "%"
    return {"name": name, "reference": round(a, 6), "quantized": round(b, 6), "drop": round(drop, 4), "unit": unit,
            "on": f"validation split ({len(validation.target)} samples)"}, comparison


def _shapes(batches: list[list[torch.Tensor]]) -> dict[str, list[int]]:
    return {f"input{i}": [sum(len(b[i]) for b in batches), *batches[0][i].shape[1:]] for i in range(len(batches[0]))}


def _sizes(fp32: Path, variant: Path) -> dict[str, float]:
    a, b = fp32.stat().st_size / 1e6, variant.stat().st_size / 1e6
    return {"fp32": round(a, 4), "variant": round(b, 4), "ratio": round(b / a, 4) if a else 0.0}


def _latency(job: ExportJob, fp32: Callable, variant: Callable) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {"fp32": {}, "variant": {}, "ratio": {}}
    for sizes in corners(size_grid(job.inputs, job.config.dims, job.dims)):
        xs = make_inputs(job.inputs, sizes, 0)
        key = label(sizes)
        out["fp32"][key] = time_calls(lambda: fp32(xs))
        out["variant"][key] = time_calls(lambda: variant(xs))
        out["ratio"][key] = round(out["variant"][key] / out["fp32"][key], 4) if out["fp32"][key] else 0.0
    return out
