"""Seeded, learnable synthetic data sets: `synthetic: {name: zigzag, samples: 4096, ...}`.

Each generator gets its options, the model's input shapes (to fill in sizes it was not given) and
a seeded numpy Generator, and returns (inputs, target) as numpy arrays with the sample axis first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Generator:
    fn: Callable[..., tuple[list[np.ndarray], np.ndarray]]
    options: tuple[str, ...]
    task: str  # the kind of target it makes
    doc: str


def _size(opts: dict, key: str, shape: tuple, index: int, default: int) -> int:
    if key in opts:
        return int(opts[key])
    try:
        d = shape[1:][index]  # the model input's size, batch dim excluded
    except IndexError:
        return default
    return d if isinstance(d, int) else default


def zigzag(opts: dict, shapes: list[tuple], rng: np.random.Generator):
    """x in [-1, 1]; y a triangle wave with `teeth` peaks between -1 and 1, plus optional noise."""
    n, teeth, noise = int(opts.get("samples", 2048)), float(opts.get("teeth", 3)), float(opts.get("noise", 0.0))
    x = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    t = (x + 1) * teeth / 2
    y = (4 * np.abs(t - np.floor(t) - 0.5) - 1).astype(np.float32)
    y += rng.normal(0, noise, size=y.shape).astype(np.float32) if noise else 0
    return [x], y


def blobs(opts: dict, shapes: list[tuple], rng: np.random.Generator):
    """`classes` Gaussian clusters in `dim` dimensions; the label is the cluster."""
    n, k = int(opts.get("samples", 2048)), int(opts.get("classes", 3))
    dim = _size(opts, "dim", shapes[0], -1, 2)
    centers = rng.normal(0, 3.0, size=(k, dim))
    y = rng.integers(0, k, size=n)
    x = centers[y] + rng.normal(0, float(opts.get("spread", 1.0)), size=(n, dim))
    return [x.astype(np.float32)], y.astype(np.int64)


def sequences(opts: dict, shapes: list[tuple], rng: np.random.Generator):
    """Noise sequences with one class signature vector hidden at a random position."""
    n, k = int(opts.get("samples", 2048)), int(opts.get("classes", 4))
    seq = _size(opts, "seq", shapes[0], 0, 16)
    dim = _size(opts, "dim", shapes[0], -1, 32)
    signatures = rng.normal(0, 1, size=(k, dim))
    signatures *= float(opts.get("strength", 4.0)) / np.linalg.norm(signatures, axis=1, keepdims=True) * np.sqrt(dim) / 4
    y = rng.integers(0, k, size=n)
    x = rng.normal(0, float(opts.get("noise", 1.0)), size=(n, seq, dim))
    pos = rng.integers(0, seq, size=n)
    x[np.arange(n), pos] += signatures[y]
    return [x.astype(np.float32)], y.astype(np.int64)


def images(opts: dict, shapes: list[tuple], rng: np.random.Generator):
    """Class c is a small patch of stripes at angle pi*c/classes, placed at a random position in noise,
    with a random phase and contrast: finding it takes local filters and pooling (a CNN), which a
    linear model over the pixels does not have."""
    n, k = int(opts.get("samples", 1024)), int(opts.get("classes", 4))
    channels = _size(opts, "channels", shapes[0], 0, 3)
    size = _size(opts, "size", shapes[0], -1, 16)
    patch = max(3, size // 2)
    y = rng.integers(0, k, size=n)
    theta = np.pi * y / k
    u, v = np.meshgrid(np.arange(patch), np.arange(patch), indexing="ij")
    freq = float(opts.get("frequency", 0.25))
    phase = rng.uniform(0, 2 * np.pi, size=n)
    proj = u[None] * np.cos(theta)[:, None, None] + v[None] * np.sin(theta)[:, None, None]
    stripes = np.sin(2 * np.pi * freq * proj + phase[:, None, None]) * rng.uniform(0.6, 1.2, size=(n, 1, 1))
    x = rng.normal(0, float(opts.get("noise", 0.5)), size=(n, channels, size, size))
    top = rng.integers(0, size - patch + 1, size=n)
    left = rng.integers(0, size - patch + 1, size=n)
    mix = rng.uniform(0.5, 1.0, size=(n, channels, 1, 1))
    for i in range(n):
        x[i, :, top[i]:top[i] + patch, left[i]:left[i] + patch] += stripes[i][None] * mix[i]
    return [x.astype(np.float32)], y.astype(np.int64)


GENERATORS: dict[str, Generator] = {
    "zigzag": Generator(zigzag, ("samples", "teeth", "noise"), "regression", zigzag.__doc__ or ""),
    "blobs": Generator(blobs, ("samples", "classes", "dim", "spread"), "classification", blobs.__doc__ or ""),
    "sequences": Generator(sequences, ("samples", "classes", "seq", "dim", "noise", "strength"), "classification",
                           sequences.__doc__ or ""),
    "images": Generator(images, ("samples", "classes", "channels", "size", "noise", "frequency"), "classification",
                        images.__doc__ or ""),
}


def generate(options: dict[str, Any], shapes: list[tuple], seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    gen = GENERATORS[options["name"]]
    return gen.fn(options, shapes, np.random.default_rng(seed))
