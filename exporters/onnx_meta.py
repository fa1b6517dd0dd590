"""specc's entries in an ONNX file's metadata (`specc.parity`, `specc.variant`, ...) and the variant
files' names: torch-free, so that `specc.verified` can read a file's verdict without importing torch."""
from __future__ import annotations

from pathlib import Path

PREFIX = "specc."
VARIANT_FILES = {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx", "O1": "model.O1.onnx",
                 "O2": "model.O2.onnx", "O3": "model.O3.onnx"}


def read(model) -> dict[str, str]:  # model: onnx.ModelProto
    """specc's metadata entries, without the prefix."""
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}


def write(model, meta: dict[str, str]) -> None:
    """Replace specc's metadata entries by `meta` (others are kept)."""
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in meta.items():
        model.metadata_props.add(key=PREFIX + k, value=str(v))


def read_file(path: Path) -> dict[str, str]:
    """specc's metadata entries of an ONNX file (its weights are not read)."""
    import onnx
    return read(onnx.load(str(path), load_external_data=False))
