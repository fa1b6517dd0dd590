"""ONNX: the dynamo exporter by default (opset 18, one file, dynamic shapes from symbolic dims,
input and output names from the spec), the legacy exporter behind `exporter="legacy"` and as the
fallback when dynamo fails on a node or fixes a dim that should stay dynamic.

The model stays in memory from the exporter to the one save: the declared shapes are checked (and
repaired where safe, see `declared`), `onnx.checker` and strict shape inference run, specc's
metadata is added, and the file is written once, atomically.
"""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import onnx
import torch

from . import blame, rewrite
from .artifact import Artifact, staged, staged_folder
from .capture import Captured, capture
from .declared import onnx_shapes
from . import onnx_meta
from .errors import ExportError, raise_if_io
from .inputs import dynamic_axes, torch_dynamic_shapes
from .job import ExportJob
from .torchlib import cached_registry

EXTERNAL_DATA_BYTES = 1_500_000_000
_OPSET_NOISE = ("operator set version", "version conver", "target version")


class _Failed(Exception):
    """One exporter's failure: the root cause and the spec node it happened at."""

    def __init__(self, exporter: str, cause: str, node: Any):
        super().__init__(cause)
        self.exporter, self.cause, self.node = exporter, cause, node

    @property
    def loc(self) -> Any:
        return self.node.meta.get("specc_loc") if self.node is not None else None


def export(job: ExportJob) -> Artifact:
    start = time.perf_counter()
    module, notes = rewrite.for_format("onnx", job.module, job.example)
    cap = Captured()
    model, exporter, values = _model(job, module, notes, cap)
    large = job.weight_bytes > EXTERNAL_DATA_BYTES  # the checker reads a model this size from its file
    declared = _checked(lambda: onnx_shapes(model, job.inputs, job.outputs))  # strict shape inference
    if not large:
        _checked(lambda: onnx.checker.check_model(model))
    meta = dict(job.metadata, exporter=exporter, opset=str(job.config.opset), parity="pending")
    if values:
        meta["node_values"] = json.dumps(values)
    onnx_meta.write(model, meta)
    _save(model, job)
    if large:
        _checked(lambda: onnx.checker.check_model(str(job.path("onnx"))))
    art = Artifact("onnx", job.path("onnx"), time.perf_counter() - start, notes, cap.summary(), exporter)
    art.declared = declared
    return art


def _checked(check: Callable[[], Any]) -> Any:
    try:
        return check()
    except Exception as e:
        raise ExportError("onnx", f"onnx.checker rejects the exported model: {blame.root_cause(e)}",
                          "try --exporter legacy or another --opset") from None


def _model(job: ExportJob, module: Any, notes: list[str], cap: Captured) -> tuple[onnx.ModelProto, str, dict]:
    """The exported model, in memory: dynamo first (unless the config says legacy), else legacy."""
    failure: _Failed | None = None
    if job.config.exporter == "dynamo":
        try:
            model, values = _dynamo(job, module, cap)
            reason = _unusable(model, job)
            if reason is None:
                return model, "dynamo", values
            notes.append(f"{reason}; used the legacy exporter instead")
        except _Failed as f:
            failure = f
            notes.append(f"the dynamo exporter failed{blame.where(f.node)}: {f.cause}; used the legacy exporter instead")
    try:
        return _legacy(job, module, cap), "legacy", {}
    except _Failed as f:
        first = failure or f
        also = f"; the legacy exporter: {f.cause}{blame.where(f.node)}" if failure is not None else ""
        raise ExportError("onnx", f"{first.cause}{blame.where(first.node)}{also}",
                          f"this op has no ONNX form at opset {job.config.opset}; try a higher --opset, another "
                          "--exporter, or check the op against `specc ops`", first.loc) from None


def _unusable(model: onnx.ModelProto, job: ExportJob) -> str | None:
    got = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), job.config.opset)
    if got != job.config.opset:
        return f"the dynamo exporter cannot write opset {job.config.opset} (it wrote {got})"
    fixed = static_dims(model, job.inputs)
    return f"the dynamo exporter fixed dim(s) {', '.join(fixed)}" if fixed else None


def _dynamo(job: ExportJob, module: Any, cap: Captured) -> tuple[onnx.ModelProto, dict]:
    """torch.onnx.export(dynamo=True) of the module, in memory. (Not of the program pt2 captured: the
    exporter's decompositions specialize the symbols of the program it is given.)"""
    with capture(job.on_step) as c, cached_registry():
        try:
            program = torch.onnx.export(module, tuple(job.example), None, dynamo=True,
                                        dynamic_shapes=torch_dynamic_shapes(job.inputs, job.dims),
                                        input_names=list(job.inputs), output_names=job.output_names,
                                        opset_version=job.config.opset, verbose=False)
            model = program.model_proto
        except Exception as e:
            raise_if_io(e, job.path("onnx"))
            raise _Failed("dynamo", blame.root_cause(e), blame.culprit(e, module)) from None
    cap.warnings += [w for w in c.warnings if not any(n in w for n in _OPSET_NOISE)]
    return model, value_map(program, module)


def _legacy(job: ExportJob, module: Any, cap: Captured) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with capture(job.on_step, stdout_fd=True) as c:
        try:
            torch.onnx.export(module, tuple(job.example), buffer, dynamo=False, input_names=list(job.inputs),
                              output_names=job.output_names, opset_version=job.config.opset,
                              dynamic_axes=dynamic_axes(job.inputs, job.outputs))
        except Exception as e:
            raise_if_io(e, job.path("onnx"))
            raise _Failed("legacy", blame.root_cause(e), blame.culprit(e, module) or _aten_node(e, module)) from None
    cap.warnings += c.warnings
    model = onnx.load_from_string(buffer.getvalue())
    fixed = static_dims(model, job.inputs)
    if fixed:
        raise _Failed("legacy", f"the exported graph fixes dim(s) {', '.join(fixed)}: some op in the model "
                      "specializes on the example size", None)
    return model


def _save(model: onnx.ModelProto, job: ExportJob) -> None:
    path = job.path("onnx")
    if job.weight_bytes <= EXTERNAL_DATA_BYTES:
        with staged(path) as tmp:
            onnx.save(model, str(tmp))
        return
    # the file names its data file, so both are written under their final names in a temp folder
    with staged_folder(path, [path.name + ".data"]) as folder:
        onnx.save(model, str(folder / path.name), save_as_external_data=True, location=path.name + ".data")


def _aten_node(e: BaseException, module: torch.fx.GraphModule) -> Any:
    """The spec node whose op an error's `aten::NAME` names, when the traceback cannot tell."""
    m = re.search(r"aten::(\w+)", str(e))
    if not m:
        return None
    from compiler.ops import snake
    for node in module.graph.nodes:
        if not node.meta.get("specc_path"):
            continue
        op = type(module.get_submodule(node.target)).__name__ if node.op == "call_module" else node.target
        if (snake(op) if isinstance(op, str) else getattr(op, "__name__", "")) == m.group(1):
            return node
    return None


def static_dims(model: onnx.ModelProto, inputs: Any) -> list[str]:
    """Symbolic dims that the exported graph's inputs hold as fixed numbers."""
    fixed = []
    by_name = {i.name: i for i in model.graph.input}
    for name, inp in inputs.items():
        vi = by_name.get(name)
        if vi is None:
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, d in enumerate(inp.shape):
            if isinstance(d, str) and axis < len(dims) and dims[axis].HasField("dim_value"):
                fixed.append(d)
    return list(dict.fromkeys(fixed))


def value_map(program: Any, module: torch.fx.GraphModule) -> dict[str, str]:
    """spec node path -> the ONNX value holding its output, via torch.export's node provenance."""
    path_of = {n.name: n.meta.get("specc_path") for n in module.graph.nodes if n.meta.get("specc_path")}
    out: dict[str, str] = {}
    try:
        graph = program.exported_program.graph
    except Exception:
        return out
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        origin = blame.root(node)
        if origin in path_of:
            out[path_of[origin]] = node.name  # the last op of a node's decomposition holds its output
    return out


def record_verdict(path: Path, verdict: str) -> None:
    """Write the parity verdict into the file's metadata (atomically; the graph is unchanged)."""
    model = onnx.load(str(path), load_external_data=False)
    onnx_meta.write(model, dict(onnx_meta.read(model), parity=verdict))
    with staged(path) as tmp:
        onnx.save(model, str(tmp))


def session(path: Path, optimize: bool = True, options: Any = None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("onnx", "onnxruntime is not installed, so the ONNX file cannot be checked",
                          "pip install onnxruntime") from None
    opts = options or ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def runner(sess: Any) -> Callable[[list[torch.Tensor]], Any]:
    names = [i.name for i in sess.get_inputs()]

    def run(xs: list[torch.Tensor]) -> Any:
        outs = sess.run(None, {n: x.numpy() for n, x in zip(names, xs)})
        result = tuple(torch.from_numpy(o) for o in outs)
        return result[0] if len(result) == 1 else result

    return run


def load(path: Path) -> Callable[[list[torch.Tensor]], Any]:
    """A fresh onnxruntime session over the file on disk."""
    return runner(session(path))


def provider_info() -> dict[str, str]:
    try:
        import onnxruntime as ort
        return {"onnxruntime": ort.__version__, "execution_provider": "CPUExecutionProvider"}
    except ImportError:
        return {"onnxruntime": "missing"}


def intermediates(path: Path, xs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every mapped node's value, by spec path, computed by onnxruntime from the file itself."""
    model = onnx.load(str(path))
    values = json.loads(onnx_meta.read(model).get("node_values", "{}"))
    if not values:
        return {}
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    produced = {o for n in model.graph.node for o in n.output}
    existing = {o.name for o in model.graph.output}
    wanted = {p: v for p, v in values.items() if v in produced}
    for v in wanted.values():
        if v not in existing and v in typed:
            model.graph.output.append(typed[v])
            existing.add(v)
    wanted = {p: v for p, v in wanted.items() if v in existing}
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    outs = sess.run(None, {n: x.numpy() for n, x in zip(names, xs)})
    by_name = dict(zip(out_names, outs))
    return {p: torch.from_numpy(by_name[v]) for p, v in wanted.items() if v in by_name}
