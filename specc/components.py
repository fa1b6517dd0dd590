"""Losses, optimizers and schedulers by their torch names, from closed lists built by introspection.

Only classes defined by torch itself resolve: a `torch.nn` loss, a `torch.optim` optimizer, a
`torch.optim.lr_scheduler` scheduler. Arguments are checked against each class's signature.
"""
from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import torch
import torch.nn as nn
import torch.optim as optim
import torch.optim.lr_scheduler as sched

# schedulers that need Python callables or other schedulers cannot come from a config
_NO_SCHEDULERS = {"LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "LRScheduler", "_LRScheduler"}
CLASSIFICATION = {"CrossEntropyLoss", "NLLLoss", "MultiMarginLoss"}
BINARY = {"BCEWithLogitsLoss", "BCELoss"}


@cache
def losses() -> dict[str, type]:
    return {n: c for n, c in vars(nn).items()
            if isinstance(c, type) and n.endswith("Loss") and issubclass(c, nn.Module) and not n.startswith("_")}


@cache
def optimizers() -> dict[str, type]:
    return {n: c for n, c in vars(optim).items()
            if isinstance(c, type) and issubclass(c, optim.Optimizer) and c is not optim.Optimizer}


@cache
def schedulers() -> dict[str, type]:
    out = {}
    for n, c in vars(sched).items():
        if not isinstance(c, type) or n in _NO_SCHEDULERS or n.startswith("_"):
            continue
        if issubclass(c, sched.LRScheduler) or c is sched.ReduceLROnPlateau:
            out[n] = c
    return out


def arg_names(cls: type, skip: tuple[str, ...]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name not in ("self",) + skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def task_of(loss: str) -> str:
    """classification | binary | regression: which metrics and target dtype a loss implies."""
    return "classification" if loss in CLASSIFICATION else "binary" if loss in BINARY else "regression"


def _kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """YAML lists become tuples (betas), or tensors where torch wants a tensor (a loss's weight)."""
    hints = {p.name: p.annotation for p in inspect.signature(cls.__init__).parameters.values()}
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, list):
            v = torch.tensor(v, dtype=torch.float32) if "Tensor" in str(hints.get(k, "")) else tuple(v)
        out[k] = v
    return out


def make_loss(name: str, kwargs: dict[str, Any]) -> nn.Module:
    cls = losses()[name]
    return cls(**_kwargs(cls, kwargs))


def make_optimizer(name: str, kwargs: dict[str, Any], params: Any) -> optim.Optimizer:
    cls = optimizers()[name]
    return cls(params, **_kwargs(cls, kwargs))


def make_scheduler(name: str | None, kwargs: dict[str, Any], optimizer: optim.Optimizer, warmup: int) -> Any:
    """The named scheduler, preceded by `warmup` linear warm-up steps when asked."""
    main = schedulers()[name](optimizer, **_kwargs(schedulers()[name], kwargs)) if name else None
    if not warmup:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    if main is None:
        return ramp
    if isinstance(main, sched.ReduceLROnPlateau):
        raise ValueError("warmup cannot be combined with ReduceLROnPlateau")
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
