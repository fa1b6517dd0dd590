"""Checkpoints without pickle: one safetensors file per checkpoint, written atomically.

Tensors (weights, optimizer moments, RNG states) are safetensors entries; everything else
(epoch, step, scheduler and scaler state, optimizer hyper-parameters, a partial epoch's metric
sums) is JSON in the file's metadata. The history is not in it: metrics.csv holds that. Nested state dicts are flattened: a tensor becomes {"$t": key}, a tuple
{"$tuple": [...]}, a dict with non-string keys {"$dict": [[k, v], ...]}.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from compiler.errors import SpecError, file_loc, first_line

from ..fsutil import atomic_write_bytes

FORMAT = "specc-checkpoint-1"
_NAME = re.compile(r"epoch-(\d{6})(?:\+(\d{6}))?\.(?:safetensors|dcp)$")  # epochs done (+ batches of the next)
EXTRA = "extra.safetensors"  # a sharded checkpoint's (.dcp folder's) state besides the weights and optimizer


def encode(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"$t": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {"$dict": [[k, encode(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"$tuple": [encode(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"$t"}:
            return tensors[obj["$t"]]
        if set(obj) == {"$tuple"}:
            return tuple(decode(v, tensors) for v in obj["$tuple"])
        if set(obj) == {"$dict"}:
            return {k: decode(v, tensors) for k, v in obj["$dict"]}
        return {k: decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    return obj


class ForeignCheckpoint(SpecError):
    """A checkpoint of another model: never a reason to fall back to an older one."""


def to_bytes(state: dict[str, Any], model_hash: str) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    tree = encode(state, tensors, "s")
    meta = {"format": FORMAT, "model_hash": model_hash, "state": json.dumps(tree, allow_nan=True)}
    return st_save(tensors, metadata=meta)


def from_bytes(data: bytes, where: str, model_hash: str | None) -> dict[str, Any]:
    """Parse and validate a checkpoint; every problem is a `SpecError` naming the file."""
    try:
        tensors = st_load(data)
        meta = _metadata(data)
    except (SafetensorError, ValueError, OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecError.at(file_loc(where), f"not a readable checkpoint: {_short(e)}",
                           "the file is damaged or not a specc checkpoint; delete it to fall back to the previous one") from None
    if meta.get("format") != FORMAT:
        raise SpecError.at(file_loc(where), "not a specc checkpoint", f"expected format {FORMAT}")
    if model_hash is not None and meta.get("model_hash") != model_hash:
        raise ForeignCheckpoint.at(file_loc(where), "checkpoint belongs to another spec (its model differs from this run's)",
                           "resume the run it came from, or train this spec from the start")
    try:
        return decode(json.loads(meta["state"]), tensors)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise SpecError.at(file_loc(where), f"checkpoint state is damaged: {_short(e)}", "delete it") from None


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors header."""
    if len(data) < 8:
        raise ValueError("file is too short")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or n > 100 * 2**20:
        raise ValueError("header length is out of range")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a mapping")
    return meta


def _short(e: BaseException) -> str:
    return first_line(e, 200)


def path_for(folder: Path, epoch: int, batches: int = 0) -> Path:
    """`epoch-000005.safetensors` after 5 epochs; `epoch-000005+000123.safetensors` 123 batches into the 6th."""
    return folder / (f"epoch-{epoch:06d}.safetensors" if not batches else f"epoch-{epoch:06d}+{batches:06d}.safetensors")


def listing(folder: Path) -> list[tuple[int, Path]]:
    """(epochs done, path), oldest first; temp files of interrupted writes are not listed."""
    if not folder.is_dir():
        return []
    found = [((int(m.group(1)), int(m.group(2) or 0)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name))]
    return [(key[0], p) for key, p in sorted(found)]


def write(folder: Path, epoch: int, batches: int, state: dict[str, Any], model_hash: str, keep: int) -> Path:
    """Write atomically (temp, fsync, rename), then drop all but the newest `keep`."""
    path = path_for(folder, epoch, batches)
    atomic_write_bytes(path, to_bytes(state, model_hash))
    prune(folder, keep)
    for tmp in folder.glob(".epoch-*.tmp"):  # left by a process killed mid-write
        tmp.unlink(missing_ok=True)
    return path


def prune(folder: Path, keep: int) -> None:
    """Drop all but the newest `keep` checkpoints, files and sharded folders alike."""
    import shutil
    for _, old in listing(folder)[:-keep]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def read(path: Path, model_hash: str | None) -> dict[str, Any]:
    """A checkpoint's state. A sharded one gives its small state and `sharded`, its folder: the
    weights and optimizer are loaded in place from there (DCP reshards them)."""
    if path.is_dir():
        state = from_bytes((path / EXTRA).read_bytes() if (path / EXTRA).is_file() else b"", str(path), model_hash)
        state["sharded"] = str(path)
        return state
    return from_bytes(path.read_bytes(), str(path), model_hash)


def latest(folder: Path, model_hash: str) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that reads cleanly. A damaged one cannot come from our atomic writes,
    but if a disk corrupts one, the previous is used and the damaged one is reported."""
    errors = []
    for _, path in reversed(listing(folder)):
        try:
            state = read(path, model_hash)
        except SpecError as e:
            if isinstance(e, ForeignCheckpoint):
                raise
            errors.append(e)
            continue
        for e in errors:  # newer ones that are damaged: say so, and go on from this one
            print(f"warning: {e.diagnostics[0].file} is damaged ({e.diagnostics[0].message}); resuming from {path}",
                  file=sys.stderr)
        return path, state
    if errors:
        raise errors[0]
    return None

