"""`specc diff A B`: per-node changes between two specs or runs, and which of A's tensors (a run's
saved weights, or a spec's initial weights) would load into B."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.errors import SpecError, file_loc
from compiler.pipeline import Compiled, compile_spec

from . import runs

_DTYPES = {"torch.float32": "F32", "torch.float64": "F64", "torch.float16": "F16", "torch.bfloat16": "BF16",
           "torch.int64": "I64", "torch.int32": "I32", "torch.bool": "BOOL"}

Tensors = dict[str, tuple[list[int], str]]  # name -> (shape, dtype)


def _saved(weights: Path) -> Tensors:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(weights), "pt") as f:
            return {k: (list(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecError.at(file_loc(str(weights)), f"not a readable weight file: {str(e)[:200]}",
                           "rebuild the run") from None


def _initial(compiled: Compiled) -> Tensors:
    return {k: (list(v.shape), _DTYPES.get(str(v.dtype), str(v.dtype))) for k, v in compiled.module.state_dict().items()}


def diff(a: Any, b: Any, params_a: Any = None, params_b: Any = None) -> dict:
    """Node changes from A to B, and which of A's tensors would load into B."""
    from compiler.diff import diff as diff_graphs
    ca, cb = compile_spec(runs.load(a, params_a)), compile_spec(runs.load(b, params_b))
    saved = Path(a) / runs.WEIGHTS if runs.is_run(a) else None
    if saved is not None and saved.is_file():
        ta, origin = _saved(saved), str(saved)
    else:
        ta, origin = _initial(ca), "initial weights of the spec"
    result = diff_graphs(ca.typed, cb.typed, ta, _initial(cb))
    result["a"] = {"source": str(a), "name": ca.spec.name, "weights": origin}
    result["b"] = {"source": str(b), "name": cb.spec.name}
    return result
