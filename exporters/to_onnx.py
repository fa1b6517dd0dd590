"""ONNX: the dynamo exporter by default (opset 18, one file, dynamic shapes from symbolic dims,
input and output names from the spec), the legacy exporter behind `exporter="legacy"` and as the
fallback when dynamo fixes a dim that should stay dynamic (recurrent layers do). Every file
passes `onnx.checker` in full and carries specc's metadata.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import onnx
import torch

from compiler.errors import first_line
from compiler.spec import InputDecl

from .artifact import Artifact, staged
from .capture import capture
from .errors import ExportError, raise_if_io
from .inputs import dynamic_axes, torch_dynamic_shapes

EXTERNAL_DATA_BYTES = 1_500_000_000
META_PREFIX = "specc."


def export(module: torch.nn.Module, example: list[torch.Tensor], inputs: Mapping[str, InputDecl],
           output_names: list[str], output_shapes: Mapping[str, tuple], path: Path, opset: int,
           exporter: str, metadata: Mapping[str, str], weight_bytes: int,
           on_step: Callable[[str], None] | None = None) -> Artifact:
    start = time.perf_counter()
    notes: list[str] = []
    warnings: list[str] = []
    external = weight_bytes > EXTERNAL_DATA_BYTES
    with staged(path) as tmp:
        values: dict[str, str] = {}
        if exporter == "dynamo":
            with capture(on_step) as cap:
                try:
                    program = torch.onnx.export(module, tuple(example), str(tmp), dynamo=True,
                                                dynamic_shapes=torch_dynamic_shapes(inputs), input_names=list(inputs),
                                                output_names=output_names, opset_version=opset,
                                                external_data=external)
                except Exception as e:
                    raise_if_io(e, path)
                    raise ExportError("onnx", f"the dynamo exporter failed: {first_line(e)}",
                                      "try --exporter legacy, or check the op against `specc ops`") from None
            warnings += [w for w in cap.warnings if "operator set version" not in w and "version conver" not in w
                         and "target version" not in w]
            written = onnx.load(str(tmp), load_external_data=False)
            fixed = static_dims(written, inputs)
            got_opset = next((o.version for o in written.opset_import if o.domain in ("", "ai.onnx")), opset)
            if got_opset != opset:
                notes.append(f"the dynamo exporter cannot write opset {opset} (it wrote {got_opset}); "
                             f"used the legacy exporter instead")
                exporter = "legacy"
            elif fixed:
                notes.append(f"the dynamo exporter fixed dim(s) {', '.join(fixed)}; used the legacy exporter instead")
                exporter = "legacy"
            else:
                values = value_map(program, module)
        if exporter == "legacy":
            with capture(on_step, stdout_fd=True) as cap:
                try:
                    torch.onnx.export(module, tuple(example), str(tmp), dynamo=False, input_names=list(inputs),
                                      output_names=output_names, opset_version=opset,
                                      dynamic_axes=dynamic_axes(inputs, output_shapes))
                except Exception as e:
                    raise_if_io(e, path)
                    raise ExportError("onnx", f"the legacy exporter failed: {first_line(e)}{_node_of(e, module)}",
                                      f"this op has no ONNX form at opset {opset}; try a higher --opset (18 and up "
                                      "use the dynamo exporter)") from None
            warnings += cap.warnings
            fixed = static_dims(onnx.load(str(tmp), load_external_data=False), inputs)
            if fixed:
                raise ExportError("onnx", f"the exported graph fixes dim(s) {', '.join(fixed)}",
                                  "some op in the model specializes on the example size")
        model = onnx.load(str(tmp))
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:
            raise_if_io(e, path)
            raise ExportError("onnx", f"onnx.checker rejects the exported model: {first_line(e)}",
                              "try --exporter legacy or another --opset") from None
        meta = dict(metadata, exporter=exporter, opset=str(opset), parity="pending")
        if values:
            meta["node_values"] = json.dumps(values)
        set_metadata(model, meta)
        onnx.save(model, str(tmp), save_as_external_data=external, location=path.name + ".data" if external else None)
    from .capture import Captured
    summary = Captured(warnings=warnings).summary()
    return Artifact("onnx", path, time.perf_counter() - start, notes, summary, exporter)


def _node_of(e: BaseException, module: torch.fx.GraphModule) -> str:
    """' (node NAME at FILE:LINE:COL)' when the error names an aten op that a spec node lowers to."""
    import re
    m = re.search(r"aten::(\w+)", str(e))
    if not m:
        return ""
    from compiler.ops import snake
    for node in module.graph.nodes:
        path = node.meta.get("specc_path")
        if not path:
            continue
        op = node.target if node.op != "call_module" else type(module.get_submodule(node.target)).__name__
        name = snake(op) if isinstance(op, str) else getattr(op, "__name__", "")
        if name == m.group(1):
            return f" (node '{path}' at {node.meta.get('specc_loc')})"
    return ""


def static_dims(model: onnx.ModelProto, inputs: Mapping[str, InputDecl]) -> list[str]:
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
        origin = _root(node)
        if origin in path_of:
            out[path_of[origin]] = node.name  # the last op of a node's decomposition holds its output
    return out


def _root(node: Any) -> str | None:
    chain = node.meta.get("from_node") or []
    while chain:
        first = chain[0]
        if not getattr(first, "from_node", None):
            return first.name
        chain = first.from_node
    return None


def set_metadata(model: onnx.ModelProto, meta: Mapping[str, str]) -> None:
    keep = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in meta.items():
        model.metadata_props.add(key=META_PREFIX + k, value=str(v))


def metadata(path: Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def record_verdict(path: Path, verdict: str) -> None:
    """Write the parity verdict into the file's metadata (atomically; the graph is unchanged)."""
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}
    meta["parity"] = verdict
    set_metadata(model, meta)
    with staged(path) as tmp:
        onnx.save(model, str(tmp))


def session(path: Path, optimize: bool = True) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("onnx", "onnxruntime is not installed, so the ONNX file cannot be checked",
                          "pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def load(path: Path) -> Callable[[list[torch.Tensor]], Any]:
    """A fresh onnxruntime session over the file on disk."""
    sess = session(path)
    names = [i.name for i in sess.get_inputs()]

    def run(xs: list[torch.Tensor]) -> Any:
        outs = sess.run(None, {n: x.numpy() for n, x in zip(names, xs)})
        result = tuple(torch.from_numpy(o) for o in outs)
        return result[0] if len(result) == 1 else result

    return run


def provider_info() -> dict[str, str]:
    try:
        import onnxruntime as ort
        return {"onnxruntime": ort.__version__, "execution_provider": "CPUExecutionProvider"}
    except ImportError:
        return {"onnxruntime": "missing"}


def intermediates(path: Path, xs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every mapped node's value, by spec path, computed by onnxruntime from the file itself."""
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    values = json.loads(meta.get(META_PREFIX + "node_values", "{}"))
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
