"""Training data: each source read into samples, split (seeded), normalized with statistics from the
training split, and served in batches on the device.

Small tables live in tensors and are sliced directly; memory-mapped arrays, token windows and
image files are gathered per batch, in DataLoader workers when `workers:` asks for them. Random
augmentation depends only on (seed, epoch, sample), so resume and workers change nothing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from compiler.errors import SpecError, did_you_mean
from compiler.spec import Spec
from compiler.train_section import DataConfig

from . import sources
from .samples import ArraySamples, ImageSamples, Samples, TensorSamples, WindowSamples, fit
from .synthetic import generate


@dataclass
class Split:
    samples: Samples
    idx: np.ndarray  # which samples of `samples` belong to this split
    workers: int = 0
    pin: bool = False

    def __len__(self) -> int:
        return len(self.idx)

    def batches(self, order: torch.Tensor, batch_size: int, device: torch.device, skip: int = 0,
                epoch: int = 0) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """Batches in `order` (positions in this split), on `device`, skipping the first `skip`."""
        if isinstance(self.samples, TensorSamples):  # the ids go where the tensors are, once: no copy per batch
            ids = order.to(self.samples.target.device)
        else:
            ids = torch.as_tensor(self.idx)[order]
        groups = [ids[s:s + batch_size] for s in range(skip * batch_size, len(ids), batch_size)]
        pin = self.pin and device.type == "cuda"
        if isinstance(self.samples, TensorSamples) or self.workers == 0 or getattr(self.samples, "in_memory", False):
            for g in groups:
                xs, y = self.samples.take(g, epoch)
                if pin and not y.is_cuda:  # page-locked, so the copy below runs alongside the step
                    xs, y = [x.pin_memory() for x in xs], y.pin_memory()
                yield [x.to(device, non_blocking=True) for x in xs], y.to(device, non_blocking=True)
            return
        loader = torch.utils.data.DataLoader(_Batches(self.samples, groups, epoch), batch_size=None,
                                             num_workers=self.workers, pin_memory=pin)
        for got in loader:
            if isinstance(got, _Failed):  # a worker's data error, raised here as the SpecError it was
                raise SpecError(got.diagnostics)
            xs, y = got
            yield [x.to(device, non_blocking=True) for x in xs], y.to(device, non_blocking=True)


@dataclass
class _Failed:
    diagnostics: list  # of compiler.errors.Diagnostic: plain data, so it crosses from a worker process


class _Batches(torch.utils.data.Dataset):
    """Whole batches as items, so each DataLoader worker gathers a batch at once."""

    def __init__(self, samples: Samples, groups: list[torch.Tensor], epoch: int):
        self.samples, self.groups, self.epoch = samples, groups, epoch

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> Any:
        try:
            return self.samples.take(self.groups[i], self.epoch)
        except SpecError as e:  # DataLoader would re-raise it as SpecError(message), which it is not
            return _Failed(e.diagnostics)


@dataclass
class Data:
    train: Split
    val: Split | None
    stats: dict[str, Any]  # normalization statistics, saved in the run for later commands
    task: str = "regression"
    target_shape: tuple = ("batch",)  # the target's shape, batch first
    class_dim: int = -1  # where the class scores are in the model's output (-1, or 1 for per-pixel)
    flatten: bool = False  # per-token class scores: the loss sees (N, C) against (N,)
    classes: list[str] = field(default_factory=list)  # image folders: class names by index


def _split(n: int, val_split: float, seed: int, contiguous: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle, then the first part is validation; windows of a text keep their order and
    the tail is validation (overlapping windows must not straddle the split)."""
    n_val = int(round(n * val_split))
    if val_split and n_val == 0:
        n_val = 1
    if n_val >= n:
        n_val = n - 1
    if contiguous:
        return np.arange(n - n_val), np.arange(n - n_val, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_data(cfg: DataConfig, spec: Spec, task: str, n_outputs: int | None, seed: int,
              lazy_bytes: int | None = None) -> Data:
    """Read the source, check it against the spec's inputs and outputs, split and normalize.
    Memory-mapped arrays larger than `lazy_bytes` (default 256 MiB) stay mapped: batches read their rows."""
    if cfg.source in ("text", "tokens"):
        return _windows(cfg, spec, task, seed)
    if cfg.source == "images":
        return _images(cfg, spec, task, seed)
    xs, y, origin, columns = _tables(cfg, spec)
    mapped = _check_tables(cfg, spec, xs, y, origin, _LAZY_BYTES if lazy_bytes is None else lazy_bytes)
    target = _target(cfg, y, task, n_outputs, origin)
    train_idx, val_idx = _split(len(target), cfg.val_split, seed)
    if mapped is None:  # small: tensors, normalized once
        inputs = [torch.as_tensor(x) for x in _as_model_dtype(xs, spec)]
        t = TensorSamples(inputs, torch.as_tensor(target))
        train, val = t.subset(train_idx), t.subset(val_idx) if len(val_idx) else None
        stats = dict(_normalize(cfg.normalize, train, val, task), **columns)
        return Data(Split(train, np.arange(len(train))), Split(val, np.arange(len(val))) if val else None, stats, task,
                    ("batch",) + tuple(target.shape[1:]))
    arr = ArraySamples(xs, target, [i.dtype for i in spec.inputs.values()])
    stats = arr.fit_normalization(cfg.normalize, train_idx, task)
    return Data(Split(arr, train_idx, cfg.workers), Split(arr, val_idx, cfg.workers) if len(val_idx) else None,
                stats, task, ("batch",) + tuple(target.shape[1:]))


def _tables(cfg: DataConfig, spec: Spec) -> tuple[list[np.ndarray], np.ndarray, str, dict[str, list[str]]]:
    """(inputs, target, where they came from, the feature and target column names of csv/inline data:
    kept with the statistics, so `specc predict` reads the same columns)."""
    shapes = [tuple(i.shape) for i in spec.inputs.values()]
    if cfg.source == "synthetic":
        xs, y = generate(cfg.value, shapes, spec.seed)
        return xs, y, f"synthetic '{cfg.value['name']}'", {}
    if cfg.source == "npz":
        xs, y = _arrays(cfg, sources.read_npz(cfg), spec, str(cfg.value))
        return xs, y, str(cfg.value), {}
    cols = sources.read_csv(cfg) if cfg.source == "csv" else _inline(cfg)
    origin = str(cfg.value) if cfg.source == "csv" else "the inline data"
    xs, y, names = _columns(cfg, cols, origin)
    return xs, y, origin, names


def _inline(cfg: DataConfig) -> dict[str, np.ndarray]:
    out = {}
    for name, values in cfg.value.items():
        try:
            out[name] = np.asarray(values, dtype=np.float64)
        except (ValueError, TypeError):
            raise sources.err(cfg, f"inline column '{name}' is not numeric", "inline columns are lists of numbers") from None
    lengths = {k: len(v) for k, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise sources.err(cfg, f"inline columns differ in length: {lengths}", "give every column one value per sample")
    return out


def _columns(cfg: DataConfig, cols: dict[str, np.ndarray], origin: str) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """Pick features and target from columns (csv, inline): X is (N, features)."""
    names = list(cols)
    target = cfg.target or [names[-1]]
    features = cfg.features or [n for n in names if n not in target]
    for n in features + target:
        if n not in cols:
            loc = cfg.target_loc if n in target else cfg.features_loc
            raise SpecError.at(loc or cfg.source_loc, f"column '{n}' is not in {origin}",
                               did_you_mean(n, names, "column") or f"columns: {', '.join(names)}")
    return ([np.stack([cols[n] for n in features], axis=1)], np.stack([cols[n] for n in target], axis=1),
            {"features": features, "targets": target})


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
            raise sources.err(cfg, f"array '{n}' in {origin} has dtype {arrays[n].dtype}, not numbers", "save numeric arrays")
    return [arrays[n] for n in features], arrays[target]


_LAZY_BYTES = 256 * 2**20  # above this, arrays stay memory-mapped and are gathered per batch


def _check_tables(cfg: DataConfig, spec: Spec, xs: list[np.ndarray], y: np.ndarray, origin: str,
                  lazy_bytes: int) -> Any:
    """Check counts, shapes, values and integer ranges; returns a list (keep memory-mapped) or None."""
    if len(xs) != len(spec.inputs):
        raise sources.err(cfg, f"the data gives {len(xs)} input(s); the spec has {len(spec.inputs)}",
                          f"inputs: {', '.join(spec.inputs)}")
    n = len(y)
    if n == 0:
        raise sources.err(cfg, f"{origin} has no samples")
    big = sum(x.nbytes for x in xs) + y.nbytes > lazy_bytes and all(isinstance(x, np.memmap) for x in xs)
    for x, (name, inp) in zip(xs, spec.inputs.items()):
        if len(x) != n:
            raise sources.err(cfg, f"input '{name}' has {len(x)} samples, the target {n}", "give both the same count")
        want, got = inp.shape[1:], x.shape[1:]
        if not isinstance(inp.shape[0], str):
            raise SpecError.at(inp.loc, f"input '{name}' needs a symbolic batch dim first to be trained",
                               f"write [batch, {', '.join(map(str, want))}]")
        if len(got) != len(want) or any(isinstance(w, int) and w != g for w, g in zip(want, got)):
            raise sources.err(cfg, f"{origin} gives input '{name}' samples of shape {tuple(got)}, the spec expects "
                              f"({', '.join(map(str, want))})", f"fix the data, or the shape at {inp.loc}")
        if big:
            continue  # checked per batch would be a pass over the file: the model's own errors show bad values
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise sources.err(cfg, f"input '{name}' in {origin} has NaN or infinite values", "clean the data first")
        if inp.dtype.startswith("int"):
            lo, hi = inp.range or (0, math.inf)
            if (x != np.round(x)).any() or x.min() < lo or x.max() >= hi:
                raise sources.err(cfg, f"input '{name}' must hold integers in [{lo}, {hi})", f"see the range at {inp.loc}")
    return list(xs) if big else None


def _as_model_dtype(xs: list[np.ndarray], spec: Spec) -> list[np.ndarray]:
    return [x.astype(np.int64) if inp.dtype.startswith("int") else x.astype(np.float32)
            for x, inp in zip(xs, spec.inputs.values())]


def _target(cfg: DataConfig, y: np.ndarray, task: str, n_outputs: int | None, origin: str) -> np.ndarray:
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise sources.err(cfg, f"the target in {origin} has NaN or infinite values", "clean the data first")
    if task == "classification" and cfg.source == "npz" and y.ndim > 1 and y.shape[1:] != (1,):
        if y.dtype.kind not in "iu" and (y != np.round(y)).any() or y.min() < 0:
            raise sources.err(cfg, f"a per-token or per-pixel target holds class indices 0, 1, ...; {origin} has "
                              "non-integer or negative values", "or use a regression loss such as MSELoss")
        if n_outputs is not None and int(y.max()) >= n_outputs:
            raise sources.err(cfg, f"{origin} has class {int(y.max())} but the model scores {n_outputs} classes",
                              "match the classifier's channels to the number of classes")
        return np.asarray(y).astype(np.int64)
    if task == "classification":
        y = np.asarray(y).reshape(len(y), -1)
        if y.shape[1] != 1 or (y != np.round(y)).any() or y.min() < 0:
            raise sources.err(cfg, f"a classification target is one column of class indices 0, 1, ...; {origin} has "
                              f"{y.shape[1]} column(s)" + (" with non-integer or negative values" if y.shape[1] == 1 else ""),
                              "or use a regression loss such as MSELoss")
        classes = int(y.max()) + 1
        if n_outputs is not None and classes > n_outputs:
            raise sources.err(cfg, f"{origin} has {classes} classes but the model outputs {n_outputs}",
                              "match the classifier's out_features to the number of classes")
        return y[:, 0].astype(np.int64)
    y = np.asarray(y).astype(np.float32)
    if y.ndim == 1:
        y = y[:, None]
    if n_outputs is not None and y.ndim == 2 and y.shape[1] != n_outputs:
        raise sources.err(cfg, f"the target has {y.shape[1]} column(s) but the model outputs {n_outputs}",
                          "match the last layer's out_features to the target")
    return y


def _normalize(kind: str, train: TensorSamples, val: TensorSamples | None, task: str) -> dict[str, Any]:
    """Statistics from the training split, applied to both: minmax to [-1, 1] (the article's), or standard."""
    if kind == "none":
        return {"normalize": "none"}
    stats: dict[str, Any] = {"normalize": kind, "inputs": []}
    for i, t in enumerate(train.inputs):
        if not t.is_floating_point():
            stats["inputs"].append(None)
            continue
        center, scale = fit(kind, t)
        for s in (train, val):
            if s is not None:
                s.inputs[i] = (s.inputs[i] - center) / scale
        stats["inputs"].append({"center": center.tolist(), "scale": scale.tolist()})
    if task == "regression":
        center, scale = fit(kind, train.target)
        for s in (train, val):
            if s is not None:
                s.target = (s.target - center) / scale
        stats["target"] = {"center": center.tolist(), "scale": scale.tolist()}
    return stats


def _windows(cfg: DataConfig, spec: Spec, task: str, seed: int) -> Data:
    """text/tokens: windows of block_size + 1 tokens; input the first block_size, target shifted by one."""
    if task != "classification":
        raise sources.err(cfg, f"{cfg.source} data has token targets, which need a classification loss",
                          "loss: CrossEntropyLoss")
    block = cfg.options["block_size"]
    inp = next(iter(spec.inputs.values()))
    if len(spec.inputs) != 1 or len(inp.shape) != 2 or not inp.dtype.startswith("int"):
        raise SpecError.at(inp.loc, f"{cfg.source} data feeds one integer input of shape [batch, time]",
                           "write idx: {shape: [batch, time], dtype: int64, range: [0, 256]}")
    if isinstance(inp.shape[1], int) and inp.shape[1] != block:
        raise sources.err(cfg, f"block_size is {block} but input '{inp.name}' takes {inp.shape[1]} tokens",
                          f"set block_size: {inp.shape[1]}, or make the time dim symbolic")
    tokens = sources.token_array(cfg)
    starts = sources.windows(len(tokens), block, cfg.options["stride"])
    if len(starts) < 2:
        raise sources.err(cfg, f"{cfg.value} holds {len(tokens)} tokens: fewer than two windows of {block + 1}",
                          "use a longer file or a smaller block_size")
    lo, hi = inp.range or (0, 2**31)
    vocab_top = int(tokens.max()) if len(tokens) < 2**27 else None  # a full pass only for files that fit in cache
    if vocab_top is not None and vocab_top >= hi:
        raise sources.err(cfg, f"{cfg.value} holds token id {vocab_top}, but input '{inp.name}' has range [{lo}, {hi})",
                          f"raise the range (and the vocabulary) to at least {vocab_top + 1}")
    samples = WindowSamples(tokens, starts, block)
    train_idx, val_idx = _split(len(starts), cfg.val_split, seed, contiguous=True)
    return Data(Split(samples, train_idx, cfg.workers), Split(samples, val_idx, cfg.workers) if len(val_idx) else None,
                {"normalize": "none"}, task, ("batch", block))


def _images(cfg: DataConfig, spec: Spec, task: str, seed: int) -> Data:
    if task != "classification":
        raise sources.err(cfg, "an image folder gives class labels, which need a classification loss",
                          "loss: CrossEntropyLoss")
    inp = next(iter(spec.inputs.values()))
    if len(spec.inputs) != 1 or len(inp.shape) != 4 or not isinstance(inp.shape[1], int):
        raise SpecError.at(inp.loc, "image data feeds one input of shape [batch, channels, height, width]",
                           "write x: [batch, 3, 64, 64]")
    if inp.shape[1] not in (1, 3, 4):
        raise SpecError.at(inp.loc, f"image data has 1 (grey), 3 (RGB) or 4 (RGBA) channels; input '{inp.name}' "
                           f"takes {inp.shape[1]}", f"write {inp.name}: [batch, 3, ...]")
    size = cfg.options.get("size") or [d if isinstance(d, int) else None for d in inp.shape[2:]]
    if None in size:
        raise sources.err(cfg, "the images need a size: the spec's height and width are symbolic", "size: [64, 64]")
    for want, got, what in zip(inp.shape[2:], size, ("height", "width")):
        if isinstance(want, int) and want != got:
            raise sources.err(cfg, f"size gives {what} {got}, input '{inp.name}' takes {want}", f"size: {inp.shape[2:]}")
    folder = sources.image_folder(cfg)
    train_idx, val_idx = _split(len(folder.files), cfg.val_split, seed)
    samples = ImageSamples(folder.files, folder.labels, tuple(size), inp.shape[1], cfg.options.get("augment") or {}, seed,
                           f"train.data at {cfg.source_loc}")
    samples.load()
    stats = samples.fit_normalization(cfg.normalize, train_idx)
    train = Split(samples, train_idx, cfg.workers)
    val = Split(samples.evaluation(), val_idx, cfg.workers) if len(val_idx) else None
    stats["classes"] = folder.classes
    return Data(train, val, stats, task, classes=folder.classes)


def stats_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, indent=2)
