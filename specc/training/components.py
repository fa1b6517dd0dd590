"""Losses, optimizers and schedulers by their torch names (the names and arguments were checked
against the catalog when the spec was loaded; torch's own argument errors remain possible).

Only classes defined by torch itself resolve: a `torch.nn` loss, a `torch.optim` optimizer, a
`torch.optim.lr_scheduler` scheduler.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn
import torch.optim as optim
import torch.optim.lr_scheduler as sched


def _kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """YAML lists become tuples (betas), or tensors where torch wants a tensor (a loss's weight)."""
    hints = {p.name: p.annotation for p in inspect.signature(cls.__init__).parameters.values()}
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, list):
            v = torch.tensor(v, dtype=torch.float32) if "Tensor" in str(hints.get(k, "")) else tuple(v)
        out[k] = v
    return out


class FlatLoss(nn.Module):
    """A class-index loss over every token: (..., C) scores against (...) targets as (N, C) and (N,)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(out.reshape(-1, out.shape[-1]), target.reshape(-1))


def make_loss(name: str, kwargs: dict[str, Any], flatten: bool = False) -> nn.Module:
    cls = getattr(nn, name)
    loss = cls(**_kwargs(cls, kwargs))
    return FlatLoss(loss) if flatten else loss


def make_optimizer(name: str, kwargs: dict[str, Any], params: Any) -> optim.Optimizer:
    cls = getattr(optim, name)
    return cls(params, **_kwargs(cls, kwargs))


def make_scheduler(name: str | None, kwargs: dict[str, Any], optimizer: optim.Optimizer, warmup: int) -> Any:
    """The named scheduler, preceded by `warmup` linear warm-up steps when asked."""
    main = getattr(sched, name)(optimizer, **_kwargs(getattr(sched, name), kwargs)) if name else None
    if not warmup:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    if main is None:
        return ramp
    if isinstance(main, sched.ReduceLROnPlateau):
        raise ValueError("warmup cannot be combined with ReduceLROnPlateau")
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
