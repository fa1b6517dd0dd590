"""Compiled training (`train.compile: true` or `--compile`): the forward and the loss go through
`torch.compile` as one function, so AOTAutograd compiles the backward too. On CUDA it uses the
reduce-overhead mode (CUDA graphs), which removes the per-kernel launch cost that bounds small
models; each batch shape gets its own graph (the last, smaller batch of an epoch is a second one).

Checkpoints hold the plain module's state, so a compiled run resumes exactly like an eager one.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


def compile_step(loop: Any, device: torch.device) -> Callable:
    model, loss_fn = loop.parts.model, loop.parts.loss_fn
    graphs = device.type == "cuda"

    def step(xs: list[torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with loop.autocast():
            out = model(*xs)
            out = out[0] if isinstance(out, tuple) else out
            return loss_fn(out, y), out

    compiled = torch.compile(step, mode="reduce-overhead" if graphs else None, dynamic=False)

    def run(xs: list[torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are consumed
        return compiled(xs, y)

    return run
