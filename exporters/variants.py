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

from . import onnx_meta, to_onnx
from .artifact import Artifact, staged
from .blame import root_cause
from .capture import capture
from .errors import ExportError
from .inputs import corners, make_inputs, size_grid
from .job import ExportJob
from .parity import Check, Comparison, compare, flatten, label, time_calls

VARIANTS = ("int8", "fp16", "O1", "O2", "O3")
FILES = onnx_meta.VARIANT_FILES
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

def produce(variant: str, job: ExportJob, validation: "Validation | None" = None) -> Artifact:
    """Write the variant next to model.onnx (which must exist) and return its artifact. int8 writes
    its candidates (`check` keeps the one that measures best); static int8 calibrates on `validation`."""
    import time
    start = time.perf_counter()
    source, target = job.path("onnx"), path(job, variant)
    with capture(stdout_fd=True) as cap:
        try:
            if variant == "int8":
                notes = _int8(source, target, variant) + _int8_static(source, target, validation)
            else:
                notes = {"fp16": _fp16}.get(variant, _optimized)(source, target, variant)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(variant_format(variant), f"onnxruntime could not make the {variant} variant: "
                              f"{root_cause(e)}", "export the fp32 model only, or try another variant") from None
    return Artifact(variant_format(variant), target, time.perf_counter() - start, notes, cap.summary(), variant)


def _save(model: onnx.ModelProto, target: Path, source: Path, variant: str) -> None:
    meta = dict(onnx_meta.read_file(source), variant=variant, parity="pending")
    onnx_meta.write(model, meta)
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
            _save(onnx.load(str(out)), _candidate(target, "per-channel" if per_channel else ""), source, variant)
    return list(dict.fromkeys(notes))


CALIBRATION_SAMPLES = 256


def _int8_static(source: Path, target: Path, validation: "Validation | None") -> list[str]:
    """Static int8 (QDQ, activations calibrated on the validation split) for conv nets, where dynamic
    quantization's ConvInteger is often slower than fp32. Nothing without a validation split."""
    if not any(n.op_type == "Conv" for n in onnx.load(str(source), load_external_data=False).graph.node):
        return []
    if validation is None:
        return ["static int8 was not tried: it calibrates on the validation split, and there is none"]
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    names = [i.name for i in onnx.load(str(source), load_external_data=False).graph.input]
    n = min(CALIBRATION_SAMPLES, len(validation.target))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter([{k: x[i:i + 1].numpy() for k, x in zip(names, validation.inputs)} for i in range(n)])

        def get_next(self) -> dict | None:
            return next(self.rows, None)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "static.onnx"
        try:
            quantize_static(source, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            if _unsupported(out) is not None:
                return ["static int8 was not kept: onnxruntime has no CPU kernel for one of its ops"]
        except Exception as e:  # a candidate only: the dynamic ones stand
            return [f"static int8 failed ({root_cause(e)}); dynamic int8 only"]
        _save(onnx.load(str(out)), _candidate(target, "static"), source, "int8")
    return [f"static int8 calibrated on {n} validation samples"]


_QUANTIZED_FROM = {"DynamicQuantizeLSTM": "LSTM", "DynamicQuantizeMatMul": "MatMul", "QAttention": "Attention",
                   "QEmbedLayerNormalization": "EmbedLayerNormalization"}


INT8_KINDS = {"": "dynamic, weights per tensor", "per-channel": "dynamic, weights per channel",
              "static": "static (QDQ), activations calibrated on the validation split"}


def _candidate(target: Path, kind: str) -> Path:
    """Where an int8 candidate is written: the variant's own name for the first ('' : per tensor)."""
    return target if not kind else target.with_name(target.name.replace(".onnx", f".{kind}.onnx"))


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
    """The variant against fp32 on the task metric (or seeded inputs), with size and speed. For int8,
    the fastest candidate within `max_drop` becomes model.int8.onnx (the most accurate if none is)."""
    fp32 = to_onnx.load(job.path("onnx"))
    kinds = [k for k in INT8_KINDS if _candidate(art.path, k).is_file()] if variant == "int8" else [""]
    batches = _batches(job, validation)
    ref = _outputs(fp32, batches)
    tol = (job.config.atol, job.config.rtol)
    try:
        scored = {k: _score(ref, _outputs(to_onnx.load(_candidate(art.path, k)), batches), validation, tol)
                  for k in kinds}
        kind = _pick(kinds, scored, max_drop, lambda k: _speed(job, fp32, to_onnx.load(_candidate(art.path, k))))
        if kind:  # another candidate measured better: it becomes the variant's file
            os.replace(_candidate(art.path, kind), art.path)
        if variant == "int8":
            art.notes.append(f"int8 kept: {INT8_KINDS[kind]} (of {len(kinds)} measured: the fastest within "
                             "--max-drop, else the most accurate)")
    finally:  # never a stray candidate beside the variant, whatever happened
        for k in kinds:
            if k:
                _candidate(art.path, k).unlink(missing_ok=True)
    metric, comparison = scored[kind]
    metric["max_drop"] = max_drop
    c = Check.of(variant_format(variant), {}, _shapes(batches), comparison)
    c.kind, c.metric = "metric", metric
    c.passed = bool(metric["drop"] <= max_drop)
    c.size_mb = _sizes(job.path("onnx"), art.path)
    c.latency_ms = _latency(job, fp32, to_onnx.load(art.path))
    c.note = validation.source if validation is not None else ("no validation split: seeded inputs, relative "
                                                               "error against fp32 in percent")
    return c


def _pick(kinds: list[str], scored: dict, max_drop: float, speed: Callable[[str], float]) -> str:
    """Among candidates within max_drop, the fastest; if none is within it, the most accurate."""
    if len(kinds) == 1:
        return kinds[0]
    ok = [k for k in kinds if scored[k][0]["drop"] <= max_drop]
    if not ok:
        return min(kinds, key=lambda k: scored[k][0]["drop"])
    return max(ok, key=speed) if len(ok) > 1 else ok[0]


def _speed(job: ExportJob, fp32: Callable, variant: Callable) -> float:
    """fp32's time over the variant's, geometric mean over the smallest and largest sizes (above 1: faster)."""
    ratios = []
    for sizes in corners(size_grid(job.inputs, job.config.dims, job.dims)):
        xs = make_inputs(job.inputs, sizes, 0)
        ratios.append(time_calls(lambda: fp32(xs), rounds=10) / max(time_calls(lambda: variant(xs), rounds=10), 1e-9))
    return float(np.exp(np.mean(np.log(ratios))))


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
    """ms per call of each, and `speed`: fp32's time over the variant's (0.22: the variant runs at
    ×0.22 the speed of fp32, i.e. slower; 2.0: twice as fast). One ratio, read one way."""
    out: dict[str, dict[str, float]] = {"fp32": {}, "variant": {}, "speed": {}}
    for sizes in corners(size_grid(job.inputs, job.config.dims, job.dims)):
        xs = make_inputs(job.inputs, sizes, 0)
        key = label(sizes)
        out["fp32"][key] = time_calls(lambda: fp32(xs))
        out["variant"][key] = time_calls(lambda: variant(xs))
        out["speed"][key] = round(out["fp32"][key] / out["variant"][key], 4) if out["variant"][key] else 0.0
    return out


def speed_verdict(c: Check) -> str:
    """A plain sentence when a variant is slower than fp32 somewhere ("" when it is not)."""
    speed = (c.latency_ms or {}).get("speed") or {}
    slow = {k: v for k, v in speed.items() if v < 1}
    if not slow:
        return ""
    where = ", ".join(f"×{v:.2f} the speed of fp32 at {k}" for k, v in speed.items())
    size = (c.size_mb or {}).get("ratio")
    smaller = f"; it is {size:.2f}× the size" if size else ""
    if len(slow) == len(speed):
        pays = "int8 does not pay off on this model here" if c.format.endswith("int8") else "it is slower everywhere"
        return f"{c.format} is SLOWER than fp32 ({where}): {pays}{smaller}"
    return f"{c.format} is slower than fp32 at some sizes ({where}){smaller}"
