"""Samples: what a split gathers a batch from. `take(ids, epoch)` returns (inputs, target) as CPU
tensors; everything a worker process needs is plain data, so DataLoader workers can gather too."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from compiler.errors import SpecError

from .sources import raise_many


class Samples(Protocol):
    def take(self, ids: torch.Tensor, epoch: int) -> tuple[list[torch.Tensor], torch.Tensor]: ...


class TensorSamples:
    """In memory: batches are slices of tensors (on the GPU when they fit there)."""

    def __init__(self, inputs: list[torch.Tensor], target: torch.Tensor):
        self.inputs, self.target = inputs, target

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def subset(self, idx: np.ndarray) -> "TensorSamples":
        i = torch.as_tensor(idx, dtype=torch.long)
        return TensorSamples([t[i] for t in self.inputs], self.target[i])

    def to(self, device: torch.device) -> None:
        self.inputs = [t.to(device) for t in self.inputs]
        self.target = self.target.to(device)

    def take(self, ids: torch.Tensor, epoch: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        if ids.device != self.target.device:  # Split.batches moves them once per epoch; other callers here
            ids = ids.to(self.target.device)
        return [t[ids] for t in self.inputs], self.target[ids]


class ArraySamples:
    """Memory-mapped arrays: a batch reads its rows, then is normalized."""

    def __init__(self, arrays: list[np.ndarray], target: np.ndarray, dtypes: list[str]):
        self.arrays, self.target, self.dtypes = arrays, target, dtypes
        self.norm: list[Any] = [None] * len(arrays)
        self.target_norm: Any = None

    def fit_normalization(self, kind: str, train_idx: np.ndarray, task: str) -> dict[str, Any]:
        """Per-feature statistics over the training rows, computed in chunks."""
        if kind == "none":
            return {"normalize": "none"}
        stats: dict[str, Any] = {"normalize": kind, "inputs": []}
        for i, (a, dtype) in enumerate(zip(self.arrays, self.dtypes)):
            if dtype.startswith("int"):
                stats["inputs"].append(None)
                continue
            center, scale = fit(kind, _chunked(a, train_idx, kind))  # float64 statistics, float32 batches
            self.norm[i] = (center.float(), scale.float())
            stats["inputs"].append({"center": center.tolist(), "scale": scale.tolist()})
        if task == "regression":
            self.target_norm = fit(kind, torch.as_tensor(self.target[np.sort(train_idx)], dtype=torch.float32))
            stats["target"] = {"center": self.target_norm[0].tolist(), "scale": self.target_norm[1].tolist()}
        return stats

    def take(self, ids: torch.Tensor, epoch: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        order = ids.numpy()
        xs = []
        for a, dtype, norm in zip(self.arrays, self.dtypes, self.norm):
            x = torch.from_numpy(np.ascontiguousarray(a[order]))
            x = x.long() if dtype.startswith("int") else x.float()
            xs.append(x if norm is None else (x - norm[0]) / norm[1])
        y = torch.from_numpy(np.ascontiguousarray(self.target[order]))
        if self.target_norm is not None:
            y = (y.float() - self.target_norm[0]) / self.target_norm[1]
        return xs, y


def _chunked(a: np.ndarray, idx: np.ndarray, kind: str, rows: int = 65536) -> torch.Tensor:
    """The statistics' input: for minmax the per-chunk min and max rows, for standard a sample
    of rows large enough for the mean and std (all of them when they fit)."""
    idx = np.sort(idx)
    if len(idx) <= rows:
        return torch.as_tensor(np.asarray(a[idx], dtype=np.float64))
    if kind == "minmax":
        parts = [np.asarray(a[idx[s:s + rows]], dtype=np.float64) for s in range(0, len(idx), rows)]
        return torch.as_tensor(np.stack([p.min(0) for p in parts] + [p.max(0) for p in parts]))
    pick = np.sort(np.random.default_rng(0).choice(idx, rows, replace=False))
    return torch.as_tensor(np.asarray(a[pick], dtype=np.float64))


class WindowSamples:
    """Windows of a token array: input tokens[s : s+T], target tokens[s+1 : s+T+1]."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, block: int):
        self.tokens, self.starts, self.block = tokens, starts, block

    def take(self, ids: torch.Tensor, epoch: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        starts = self.starts[ids.numpy()]
        rows = np.stack([np.asarray(self.tokens[s:s + self.block + 1], dtype=np.int64) for s in starts])
        t = torch.from_numpy(rows)
        return [t[:, :-1]], t[:, 1:].contiguous()


class ImageSamples:
    """Image files, normalized per channel, augmented in training only. A folder whose pixels fit in
    `CACHE_BYTES` is decoded once into memory (uint8) and batches are gathered by index; without
    augmentation the normalized float32 images are kept too, so a batch is one index into a tensor.
    Larger folders are decoded per batch."""

    CACHE_BYTES = 2**30

    def __init__(self, files: list[Path], labels: np.ndarray, size: tuple[int, int], channels: int,
                 augment: dict[str, Any], seed: int, where: str = ""):
        self.files, self.labels, self.size, self.channels = files, labels, size, channels
        self.augment, self.seed, self.where = augment, seed, where  # where: the spec line, for decode errors
        self.norm: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pixels: torch.Tensor | None = None  # (N, C, H, W) uint8, when cached
        self.ready: torch.Tensor | None = None  # (N, C, H, W) float32, normalized: cached and not augmented
        self.targets = torch.as_tensor(labels)

    @property
    def in_memory(self) -> bool:
        return self.pixels is not None

    def load(self, limit: int | None = None) -> None:
        """Decode every image now if the folder fits in memory: each bad file is reported here, before
        training, rather than one at a time when a batch reaches it."""
        from .sources import decode_all
        if len(self.files) * self.channels * self.size[0] * self.size[1] <= (limit or self.CACHE_BYTES):
            self.pixels = torch.from_numpy(decode_all(self.files, self.size, self.channels, self.where))

    def evaluation(self) -> "ImageSamples":
        other = ImageSamples(self.files, self.labels, self.size, self.channels, {}, self.seed, self.where)
        other.norm, other.pixels = self.norm, self.pixels
        other.ready = self.ready if self.ready is not None else other.prepared()
        return other

    def prepared(self) -> torch.Tensor | None:
        """The normalized float32 images, for batches by index (when cached, not augmented, and they fit)."""
        if self.pixels is None or self.augment or 4 * self.pixels.numel() > self.CACHE_BYTES:
            return None
        return self.normalized(self.pixels.float() / 255)

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.norm is None else (x - self.norm[0]) / self.norm[1]

    def fit_normalization(self, kind: str, train_idx: np.ndarray) -> dict[str, Any]:
        """Per-channel statistics over the training images, in one streaming pass (each decoded once,
        none kept): min and max for minmax, sums of x and x² in float64 for standard."""
        stats: dict[str, Any] = {"normalize": kind, "size": list(self.size), "channels": self.channels}
        if kind != "none":
            center, scale = self._statistics(kind, train_idx)
            self.norm = (torch.tensor(center, dtype=torch.float32).view(-1, 1, 1),
                         torch.tensor(scale, dtype=torch.float32).view(-1, 1, 1))
            stats["inputs"] = [{"center": center.tolist(), "scale": scale.tolist(), "per": "channel"}]
        self.ready = self.prepared()
        return stats

    def _statistics(self, kind: str, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = np.full(self.channels, np.inf)
        hi, total, squares, count = -lo, np.zeros(self.channels), np.zeros(self.channels), 0
        bad = []
        for i in train_idx:
            try:
                px = self.decode(int(i)).reshape(self.channels, -1).astype(np.float64)
            except SpecError as e:  # every bad file of the split, in one error
                bad += e.diagnostics
                continue
            lo, hi = np.minimum(lo, px.min(1)), np.maximum(hi, px.max(1))
            total, squares, count = total + px.sum(1), squares + np.square(px).sum(1), count + px.shape[1]
        raise_many(bad, "image")
        if kind == "minmax":
            return (hi + lo) / 2, np.where(hi > lo, (hi - lo) / 2, 1.0)
        center = total / count
        std = np.sqrt(np.maximum(squares / count - center ** 2, 0.0))
        return center, np.where(std > 0, std, 1.0)

    def decode(self, i: int) -> np.ndarray:
        if self.pixels is not None:
            return self.pixels[i].numpy().astype(np.float32) / 255.0
        from .sources import decode
        return decode(self.files[i], self.size, self.channels, self.where)

    def take(self, ids: torch.Tensor, epoch: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        if self.ready is not None:  # one gather, no per-sample work
            return [self.ready[ids]], self.targets[ids]
        if self.pixels is not None and not self.augment:
            return [self.normalized(self.pixels[ids].float() / 255)], self.targets[ids]
        images = []
        for i in ids.tolist():
            x = torch.from_numpy(self.decode(i))
            if self.augment:
                x = self.augmented(x, np.random.default_rng([self.seed, epoch, i]))
            images.append(self.normalized(x))
        return [torch.stack(images)], self.targets[ids]

    def augmented(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A horizontal flip (p = 0.5) and a random crop from the image padded by `crop` pixels."""
        if self.augment.get("flip") and rng.random() < 0.5:
            x = x.flip(-1)
        pad = int(self.augment.get("crop") or 0)
        if pad:
            h, w = x.shape[-2:]
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            top, left = int(rng.integers(0, 2 * pad + 1)), int(rng.integers(0, 2 * pad + 1))
            x = padded[:, top:top + h, left:left + w]
        return x


def fit(kind: str, t: torch.Tensor, dims: Any = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(center, scale) of `t` over `dims`: minmax maps to [-1, 1], standard to mean 0 and std 1."""
    if kind == "minmax":
        lo, hi = t.amin(dims), t.amax(dims)
        return (hi + lo) / 2, torch.where(hi > lo, (hi - lo) / 2, torch.ones_like(hi))
    center, scale = t.mean(dims), t.std(dims, unbiased=False)
    return center, torch.where(scale > 0, scale, torch.ones_like(scale))
