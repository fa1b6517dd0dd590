"""Data sources for training: inline columns, csv and npz files, synthetic sets.

Every problem is a `SpecError` that names the spec line and, where one is involved, the data
file (`housing.csv:4:2: error: ...`). npz files are read with `allow_pickle=False`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compiler.errors import Diagnostic, Loc, SpecError, did_you_mean, file_loc
from compiler.spec import Spec

from .synthetic import generate
from .trainspec import DataConfig

MAX_DATA_BYTES = 2 * 2**30


@dataclass
class Split:
    inputs: list[torch.Tensor]  # one per model input, samples first
    target: torch.Tensor

    def __len__(self) -> int:
        return int(self.target.shape[0])


@dataclass
class Data:
    train: Split
    val: Split | None
    stats: dict[str, Any]  # normalization statistics, saved in the run for later commands


def _err(cfg: DataConfig, message: str, hint: str = "", where: Loc | None = None) -> SpecError:
    """At the data file's line when `where` is given (the spec line goes in the hint), else at the spec line."""
    if where is None:
        return SpecError.at(cfg.source_loc, message, hint)
    at = f"train.data at {cfg.source_loc}"
    return SpecError(Diagnostic.at(where, message, f"{hint} ({at})" if hint else at))


def _open(cfg: DataConfig) -> Path:
    path: Path = cfg.value
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _err(cfg, f"data file {path} does not exist", "paths are relative to the spec file") from None
    except OSError as e:
        raise _err(cfg, f"cannot read data file {path}: {e.strerror}", "check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise _err(cfg, f"data file {path} is a directory", f"name a .{cfg.source} file")
    if not stat.S_ISREG(st.st_mode):
        raise _err(cfg, f"data file {path} is not a regular file (a FIFO or device?)", f"name a .{cfg.source} file")
    if st.st_size > MAX_DATA_BYTES:
        raise _err(cfg, f"data file {path} is {st.st_size / 1e9:.1f} GB; the limit is {MAX_DATA_BYTES / 1e9:.0f} GB")
    return path


def _read_csv(cfg: DataConfig) -> dict[str, np.ndarray]:
    path = _open(cfg)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as e:
        raise _err(cfg, f"cannot read {path} as UTF-8 text: {e}", "save it as UTF-8 csv") from None
    rows = list(csv.reader(io.StringIO(text)))
    if len(rows) < 2:
        raise _err(cfg, f"{path} has no data rows", "a header row, then one row per sample",
                   where=Loc(str(path), 1, 1))
    header = [h.strip() for h in rows[0]]
    columns: dict[str, list[float]] = {h: [] for h in header}
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise _err(cfg, f"row has {len(row)} fields, the header has {len(header)}", "fix the row",
                       where=Loc(str(path), i, 1))
        col = 1
        for name, cell in zip(header, row):
            try:
                columns[name].append(float(cell))
            except ValueError:
                raise _err(cfg, f"non-numeric value {cell.strip()!r} in column '{name}'",
                           "specc trains on numbers; encode categories as integers",
                           where=Loc(str(path), i, col)) from None
            col += len(cell) + 1
    return {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}


def _read_npz(cfg: DataConfig) -> dict[str, np.ndarray]:
    path = _open(cfg)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        raise _err(cfg, f"{path} holds pickled objects, which specc never loads ({e})",
                   "save plain numeric arrays with np.savez", where=file_loc(str(path))) from None
    except Exception as e:  # zipfile and numpy raise many types for a damaged file
        raise _err(cfg, f"{path} is not a readable .npz file: {e}", "write it with numpy.savez",
                   where=file_loc(str(path))) from None


def _inline(cfg: DataConfig) -> dict[str, np.ndarray]:
    out = {}
    for name, values in cfg.value.items():
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (ValueError, TypeError):
            raise _err(cfg, f"inline column '{name}' is not numeric", "inline columns are lists of numbers") from None
        out[name] = arr
    lengths = {k: len(v) for k, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise _err(cfg, f"inline columns differ in length: {lengths}", "give every column one value per sample")
    return out


def _columns(cfg: DataConfig, cols: dict[str, np.ndarray], origin: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Pick features and target from columns (csv, inline): X is (N, features)."""
    names = list(cols)
    target = cfg.target or [names[-1]]
    features = cfg.features or [n for n in names if n not in target]
    for n in features + target:
        if n not in cols:
            loc = cfg.target_loc if n in target else cfg.features_loc
            raise SpecError.at(loc or cfg.source_loc, f"column '{n}' is not in {origin}",
                               did_you_mean(n, names, "column") or f"columns: {', '.join(names)}")
    x = np.stack([cols[n] for n in features], axis=1)
    y = np.stack([cols[n] for n in target], axis=1)
    return [x], y


def _arrays(cfg: DataConfig, arrays: dict[str, np.ndarray], spec: Spec, origin: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Pick input and target arrays from an npz: by input name, else x; target y."""
    names = list(arrays)
    inputs = list(spec.inputs)
    features = cfg.features or (inputs if all(i in arrays for i in inputs) else ["x"])
    target = (cfg.target or ["y"])[0]
    for n in features + [target]:
        if n not in arrays:
            loc = (cfg.target_loc if n == target else cfg.features_loc) or cfg.source_loc
            raise SpecError.at(loc, f"array '{n}' is not in {origin}", did_you_mean(n, names, "array") or
                               f"arrays: {', '.join(names)}; name them after the inputs and 'y', or set features/target")
    for n in features + [target]:
        if arrays[n].dtype.kind not in "biuf":
            raise _err(cfg, f"array '{n}' in {origin} has dtype {arrays[n].dtype}, not numbers", "save numeric arrays")
    return [arrays[n] for n in features], arrays[target]


def load_data(cfg: DataConfig, spec: Spec, task: str, n_outputs: int | None, seed: int) -> Data:
    """Read the source, check it against the spec's inputs and outputs, split and normalize."""
    shapes = [tuple(i.shape) for i in spec.inputs.values()]
    if cfg.source == "synthetic":
        xs, y = generate(cfg.value, shapes, seed)
        origin = f"synthetic '{cfg.value['name']}'"
    elif cfg.source == "npz":
        xs, y = _arrays(cfg, _read_npz(cfg), spec, str(cfg.value))
        origin = str(cfg.value)
    else:
        cols = _read_csv(cfg) if cfg.source == "csv" else _inline(cfg)
        origin = str(cfg.value) if cfg.source == "csv" else "the inline data"
        xs, y = _columns(cfg, cols, origin)
    if len(xs) != len(spec.inputs):
        raise _err(cfg, f"the data gives {len(xs)} input(s); the spec has {len(spec.inputs)}",
                   f"inputs: {', '.join(spec.inputs)}")
    n = len(y)
    if n == 0:
        raise _err(cfg, f"{origin} has no samples")
    tensors = []
    for x, (name, inp) in zip(xs, spec.inputs.items()):
        if len(x) != n:
            raise _err(cfg, f"input '{name}' has {len(x)} samples, the target {n}", "give both the same count")
        want = inp.shape[1:]
        got = x.shape[1:]
        if not isinstance(inp.shape[0], str):
            raise SpecError.at(inp.loc, f"input '{name}' needs a symbolic batch dim first to be trained",
                               f"write [batch, {', '.join(map(str, want))}]")
        if len(got) != len(want) or any(isinstance(w, int) and w != g for w, g in zip(want, got)):
            raise _err(cfg, f"{origin} gives input '{name}' samples of shape {tuple(got)}, the spec expects "
                       f"({', '.join(map(str, want))})", f"fix the data, or the shape at {inp.loc}")
        if not np.isfinite(x).all() if x.dtype.kind == "f" else False:
            raise _err(cfg, f"input '{name}' in {origin} has NaN or infinite values", "clean the data first")
        if inp.dtype.startswith("int"):
            lo, hi = inp.range or (0, math.inf)
            if (x != np.round(x)).any() or x.min() < lo or x.max() >= hi:
                raise _err(cfg, f"input '{name}' must hold integers in [{lo}, {hi})", f"see the range at {inp.loc}")
            tensors.append(torch.as_tensor(x.astype(np.int64)))
        else:
            tensors.append(torch.as_tensor(x.astype(np.float32)))
    target = _target(cfg, y, task, n_outputs, origin)
    train_idx, val_idx = _split(n, cfg.val_split, seed)
    train = Split([t[train_idx] for t in tensors], target[train_idx])
    val = Split([t[val_idx] for t in tensors], target[val_idx]) if len(val_idx) else None
    stats = _normalize(cfg.normalize, train, val, task)
    return Data(train, val, stats)


def _target(cfg: DataConfig, y: np.ndarray, task: str, n_outputs: int | None, origin: str) -> torch.Tensor:
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise _err(cfg, f"the target in {origin} has NaN or infinite values", "clean the data first")
    if task == "classification":
        y = y.reshape(len(y), -1)
        if y.shape[1] != 1 or (y != np.round(y)).any() or y.min() < 0:
            raise _err(cfg, f"a classification target is one column of class indices 0, 1, ...; {origin} has "
                       f"{y.shape[1]} column(s)" + (" with non-integer or negative values" if y.shape[1] == 1 else ""),
                       "or use a regression loss such as MSELoss")
        classes = int(y.max()) + 1
        if n_outputs is not None and classes > n_outputs:
            raise _err(cfg, f"{origin} has {classes} classes but the model outputs {n_outputs}",
                       "match the classifier's out_features to the number of classes")
        return torch.as_tensor(y[:, 0].astype(np.int64))
    y = y.astype(np.float32)
    if y.ndim == 1:
        y = y[:, None]
    if n_outputs is not None and y.ndim == 2 and y.shape[1] != n_outputs:
        raise _err(cfg, f"the target has {y.shape[1]} column(s) but the model outputs {n_outputs}",
                   "match the last layer's out_features to the target")
    return torch.as_tensor(y)


def _split(n: int, val_split: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded shuffle, then the first part is validation."""
    n_val = int(round(n * val_split))
    if val_split and n_val == 0:
        n_val = 1
    if n_val >= n:
        n_val = n - 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _normalize(kind: str, train: Split, val: Split | None, task: str) -> dict[str, Any]:
    """Statistics from the training split, applied to both: minmax to [-1, 1] (the article's), or standard."""
    if kind == "none":
        return {"normalize": "none"}
    stats: dict[str, Any] = {"normalize": kind, "inputs": []}
    fields = [("inputs", i) for i in range(len(train.inputs)) if train.inputs[i].is_floating_point()]
    if task == "regression":
        fields.append(("target", None))
    for field_name, i in fields:
        get = (lambda s: s.inputs[i]) if field_name == "inputs" else (lambda s: s.target)
        t = get(train)
        if kind == "minmax":
            lo, hi = t.amin(0), t.amax(0)
            center, scale = (hi + lo) / 2, torch.where(hi > lo, (hi - lo) / 2, torch.ones_like(hi))
        else:
            center, scale = t.mean(0), t.std(0, unbiased=False)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        for split in (train, val):
            if split is None:
                continue
            if field_name == "inputs":
                split.inputs[i] = (split.inputs[i] - center) / scale
            else:
                split.target = (split.target - center) / scale
        entry = {"center": center.tolist(), "scale": scale.tolist()}
        if field_name == "inputs":
            stats["inputs"].append(entry)
        else:
            stats["target"] = entry
    return stats


def stats_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, indent=2)
