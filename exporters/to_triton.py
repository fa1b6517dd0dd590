"""A Triton model repository from a checked ONNX file, for serving past one machine (Triton, or
KServe with its Triton runtime):

    export/triton/<name>/config.pbtxt     platform onnxruntime_onnx, max_batch_size, dynamic_batching,
                                          inputs and outputs with their data types and dims
    export/triton/<name>/1/model.onnx     the ONNX export, as checked by the parity sweep

With a symbolic batch dim (the first dim of every input and output), `max_batch_size` is set and the
dims leave the batch out, as Triton wants; otherwise `max_batch_size: 0` and the dims are full.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol, Sequence

MAX_BATCH = 64  # config.pbtxt's max_batch_size when the spec leaves the batch dim unbounded


class TensorLike(Protocol):
    name: str
    datatype: str  # the inference protocol's: FP32, INT64, ...
    dims: tuple[int | str, ...]  # sizes, and names for symbolic dims


def batch_dim(inputs: Sequence[TensorLike], outputs: Sequence[TensorLike]) -> str | None:
    """The dim Triton may batch along: the first dim of every tensor, one symbolic name everywhere."""
    firsts = {t.dims[0] if t.dims else None for t in [*inputs, *outputs]}
    first = firsts.pop() if len(firsts) == 1 else None
    return first if isinstance(first, str) else None


def model_config(name: str, inputs: Sequence[TensorLike], outputs: Sequence[TensorLike],
                 max_batch: int) -> dict[str, Any]:
    """Triton's ModelConfig as its JSON form (what `GET /v2/models/{name}/config` returns too).
    `max_batch` 0: no batch dim, every dim is written."""
    def tensor(t: TensorLike) -> dict[str, Any]:
        dims = t.dims[1:] if max_batch else t.dims
        return {"name": t.name, "data_type": "TYPE_" + ("STRING" if t.datatype == "BYTES" else t.datatype),
                "dims": [d if isinstance(d, int) else -1 for d in dims]}
    config: dict[str, Any] = {"name": name, "platform": "onnxruntime_onnx", "max_batch_size": max_batch,
                              "input": [tensor(t) for t in inputs], "output": [tensor(t) for t in outputs]}
    if max_batch:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": 2000}
    return config


def to_pbtxt(config: dict[str, Any]) -> str:
    """The config in protobuf text format (one field a line; enums bare, strings quoted)."""
    lines = [f'name: {json.dumps(config["name"])}', f'platform: "{config["platform"]}"',
             f'max_batch_size: {config["max_batch_size"]}']
    for key in ("input", "output"):
        for t in config[key]:
            lines += [f"{key} {{", f'  name: {json.dumps(t["name"])}', f'  data_type: {t["data_type"]}',
                      f'  dims: [ {", ".join(str(d) for d in t["dims"])} ]', "}"]
    if "dynamic_batching" in config:
        delay = config["dynamic_batching"]["max_queue_delay_microseconds"]
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {delay}", "}"]
    return "\n".join(lines) + "\n"


def write_repository(onnx_path: Path, root: Path, config: dict[str, Any]) -> Path:
    """Write root/<name>/config.pbtxt and root/<name>/1/model.onnx; a half-written folder never
    replaces a whole one (it is built beside it, then renamed into place)."""
    final = root / config["name"]
    staging = root / f".{config['name']}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "1").mkdir(parents=True)
    shutil.copyfile(onnx_path, staging / "1" / "model.onnx")
    data = onnx_path.with_name(onnx_path.name + ".data")  # weights stored beside a large model
    if data.is_file():
        shutil.copyfile(data, staging / "1" / data.name)
    (staging / "config.pbtxt").write_text(to_pbtxt(config))
    old = root / f".{config['name']}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
