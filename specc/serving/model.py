"""The model a server runs: its tensors as the inference protocol names them, and one function that
runs a batch (torch, or the run's checked ONNX file in onnxruntime).

    model = load_model("runs/house", onnx=True)
    model.inputs[0]            # Tensor(name='x', datatype='FP32', shape=(-1, 2), dims=('batch', 2))
    model.run([x])             # [array of shape (len(x), 1)]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from compiler.errors import SpecError, file_loc
from compiler.spec import DimDecl, Spec

from .. import runs

# OIP v2 datatype names <-> numpy, for every numeric type (BYTES is for strings, which no model here takes)
DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
             "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
             "FP32": np.float32, "FP64": np.float64}
BY_NUMPY = {np.dtype(v): k for k, v in DATATYPES.items()}
SPEC_DTYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64", "int32": "INT32",
               "bool": "BOOL", "uint8": "UINT8", "bfloat16": "FP32"}


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str  # OIP name: FP32, INT64, ...
    dims: tuple[int | str, ...]  # the spec's dims: sizes and symbolic names

    @property
    def shape(self) -> list[int]:
        """As the protocol writes it: -1 for a symbolic dim."""
        return [d if isinstance(d, int) else -1 for d in self.dims]

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(DATATYPES[self.datatype])


@dataclass
class Model:
    """What the server needs of a run: names, tensors, dim limits and how to run a batch."""

    name: str
    platform: str  # onnxruntime_onnx | pytorch_libtorch (Triton's names)
    inputs: list[Tensor]
    outputs: list[Tensor]
    dims: dict[str, DimDecl]  # the spec's symbolic dims, with their min/max/divisible_by
    ranges: dict[str, tuple[float, float]]  # an integer input's allowed values [lo, hi)
    run: Callable[[list[np.ndarray]], list[np.ndarray]]
    spec: Spec
    run_dir: Path
    file: Path | None = None  # the ONNX file, when onnxruntime runs it
    device: str = "cpu"  # where torch runs it

    @property
    def batch_dim(self) -> str | None:
        """The dim requests may be merged along: the first dim of every input and output, when it is
        one symbolic name everywhere (as `batch` is); else None and no merging."""
        from exporters.to_triton import batch_dim
        return batch_dim(self.inputs, self.outputs)

    def largest_batch(self, wanted: int) -> int:
        decl = self.dims.get(self.batch_dim or "")
        return min(wanted, decl.max) if decl is not None and decl.max else wanted


def load_model(run_dir: Path, onnx: bool = False, allow_unchecked: bool = False, device: str = "auto") -> Model:
    """The run's model, ready to run. Torch on `device` (auto: CUDA when there is one) by default;
    `onnx`: its export/model.onnx in onnxruntime on the CPU, which must have passed its parity check
    unless `allow_unchecked`."""
    if not runs.is_run(run_dir):
        raise SpecError.at(file_loc(str(run_dir)), "serve needs a run folder", "build or train one first: specc train SPEC")
    if onnx:
        if device not in ("auto", "cpu"):
            raise SpecError.at(file_loc("--device"), f"--onnx serves in onnxruntime on the CPU; --device {device} is "
                               "for torch", "drop --onnx to serve on the GPU, or drop --device")
        return _onnx_model(run_dir, allow_unchecked)
    return _torch_model(run_dir, device)


def _inputs(spec: Spec) -> list[Tensor]:
    return [Tensor(name, SPEC_DTYPES.get(i.dtype, "FP32"), tuple(i.shape)) for name, i in spec.inputs.items()]


def _ranges(spec: Spec) -> dict[str, tuple[float, float]]:
    return {n: (float(i.range[0]), float(i.range[1])) for n, i in spec.inputs.items()
            if i.range is not None and not i.dtype.startswith("float")}


def _torch_model(run_dir: Path, device: str) -> Model:
    import torch

    from exporters.inputs import example_inputs

    from ..building import compile_run
    from ..devices import device_for
    where = device_for(device)  # refused before the weights are read
    compiled = compile_run(run_dir)
    module = compiled.module.train(False).to(where)  # inference mode
    spec, typed = compiled.spec, compiled.typed

    def run(xs: list[np.ndarray]) -> list[np.ndarray]:  # .to/.cpu return the tensor itself on its own device
        with torch.inference_mode():
            out = module(*[torch.from_numpy(np.ascontiguousarray(x)).to(where) for x in xs])
        return [o.cpu().numpy() for o in (out if isinstance(out, tuple) else (out,))]

    probe = run([x.numpy() for x in example_inputs(spec.inputs, decls=typed.dims)])  # the outputs' dtypes
    outputs = [Tensor(name, BY_NUMPY.get(p.dtype, "FP32"), tuple(typed.shape_of(v)))
               for (name, v), p in zip(typed.graph.outputs, probe)]
    return Model(spec.name, "pytorch_libtorch", _inputs(spec), outputs, dict(typed.dims), _ranges(spec), run, spec,
                 run_dir, device=str(where))


def _onnx_model(run_dir: Path, allow_unchecked: bool) -> Model:
    from exporters import to_onnx

    from ..verified import checked_onnx
    path = checked_onnx(run_dir, allow_unchecked)
    spec = runs.load_run(run_dir)
    sess = to_onnx.session(path)
    names = [i.name for i in sess.get_inputs()]
    want = [t.name for t in _inputs(spec)]
    if names != want:
        raise SpecError.at(file_loc(str(path)), f"the ONNX file takes {', '.join(names)}; the spec declares "
                           f"{', '.join(want)}", f"export it again: specc export {run_dir} --onnx")
    outputs = [Tensor(o.name, _onnx_type(o.type), tuple(d if isinstance(d, int) else str(d) for d in o.shape))
               for o in sess.get_outputs()]
    return Model(spec.name, "onnxruntime_onnx", _inputs(spec), outputs, dict(spec.dims), _ranges(spec),
                 lambda xs: sess.run(None, dict(zip(names, xs))), spec, run_dir, path)


def triton_repository(run_dir: Path, max_batch: int = 64) -> Path:
    """`specc export --triton`: export/triton/<name>/{config.pbtxt, 1/model.onnx} from the run's
    ONNX file, which must have passed its parity check."""
    from exporters import to_triton
    model = _onnx_model(run_dir, allow_unchecked=False)
    most = model.largest_batch(max_batch) if model.batch_dim else 0
    config = to_triton.model_config(model.name, model.inputs, model.outputs, most)
    return to_triton.write_repository(model.file, run_dir / "export" / "triton", config)  # type: ignore[arg-type]


def _onnx_type(t: str) -> str:
    """onnxruntime's 'tensor(float)' -> 'FP32'."""
    inner = t[len("tensor("):-1] if t.startswith("tensor(") else t
    return {"float": "FP32", "double": "FP64", "float16": "FP16", "int64": "INT64", "int32": "INT32",
            "bool": "BOOL", "uint8": "UINT8", "int8": "INT8"}.get(inner, "FP32")
