"""The shared training loop: one function, `fit`, for every spec, device, precision and world size.

Resume is exact: the data order of an epoch depends only on (seed, epoch) through a
DistributedSampler, and a checkpoint holds the weights, the optimizer, scheduler and scaler
state and the RNG states at the end of an epoch, so continuing from it replays what an
uninterrupted run does.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DistributedSampler

from . import checkpoint
from .data import Data, Split
from .metrics import Meter
from .trainspec import TrainConfig


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: the work ran and failed (exit 1)."""

    def __init__(self, epoch: int, step: int, global_step: int, value: float, last_good: Path | None):
        self.epoch, self.step, self.global_step, self.value, self.last_good = epoch, step, global_step, value, last_good
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written before it"
        super().__init__(f"loss became {value} at epoch {epoch}, step {step} (global step {global_step}); {where}")


@dataclass
class Loop:
    """What `fit` works on. `model` may be DDP-wrapped; `module` is the bare model for state dicts."""

    model: nn.Module
    module: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any  # torch.amp.GradScaler for fp16, else None
    cfg: TrainConfig
    data: Data
    device: torch.device
    task: str
    model_hash: str
    checkpoints: Path
    rank: int = 0
    world: int = 1
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # rank 0: metrics.csv, plot, progress
    progress: Any = None
    epoch: int = 0  # epochs done
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    bad_epochs: int = 0
    last_checkpoint: Path | None = None

    # --- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "epoch": self.epoch, "global_step": self.global_step, "history": self.history,
            "best": self.best, "bad_epochs": self.bad_epochs,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["cpu"])
        if torch.cuda.is_available() and "cuda" in state["rng"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.history, self.best, self.bad_epochs = list(state["history"]), state["best"], int(state["bad_epochs"])

    # --- the loop -------------------------------------------------------------------------

    def autocast(self) -> Any:
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def batches(self, split: Split, indices: torch.Tensor):
        bs = self.cfg.batch_size
        for start in range(0, len(indices), bs):
            idx = indices[start:start + bs]
            xs = [t[idx].to(self.device, non_blocking=True) for t in split.inputs]
            yield xs, split.target[idx].to(self.device, non_blocking=True)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, opt = self.cfg, self.optimizer
        sampler = DistributedSampler(range(len(self.data.train)), num_replicas=self.world, rank=self.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
        indices = torch.tensor(list(sampler), dtype=torch.long)
        n_batches = math.ceil(len(indices) / cfg.batch_size)
        self.model.train()
        meter = Meter(self.task, self.device)
        opt.zero_grad(set_to_none=True)
        if self.progress is not None:
            self.progress.start_epoch(epoch, n_batches)
        for step, (xs, y) in enumerate(self.batches(self.data.train, indices), start=1):
            last = step == n_batches
            update = step % cfg.accumulate == 0 or last
            sync = contextlib.nullcontext() if update or self.world == 1 else self.model.no_sync()
            with sync:
                with self.autocast():
                    out = self.model(*xs)
                    loss = self.loss_fn(out, y)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(epoch, step, self.global_step, loss.item(), self.last_checkpoint)
                scaled = loss / cfg.accumulate
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            meter.add(loss, out, y)
            if update:
                if cfg.grad_clip is not None:
                    if self.scaler is not None:
                        self.scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
                if self.scaler is not None:
                    self.scaler.step(opt)
                    self.scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                self.global_step += 1
                if self.scheduler is not None and cfg.interval == "step":
                    self.scheduler.step()
            if self.progress is not None:
                self.progress.step(len(y) * self.world, loss)
        return self.reduce(meter).result()

    def reduce(self, meter: Meter) -> Meter:
        """Sum a meter over the ranks (each saw its shard of the epoch)."""
        if self.world > 1:
            names = ("loss", "n", "correct", "abs_err", "sq_err", "y_sum", "y_sq", "elems")
            packed = torch.stack([getattr(meter, k) for k in names])
            dist.all_reduce(packed)
            for k, v in zip(names, packed):
                setattr(meter, k, v)
        return meter

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.data.val is None:
            return {}
        self.module.train(False)  # eval mode
        meter = Meter(self.task, self.device)
        for xs, y in self.batches(self.data.val, torch.arange(len(self.data.val))):
            with self.autocast():
                out = self.module(*xs)
                loss = self.loss_fn(out, y)
            meter.add(loss, out, y)
        return meter.result("val_")

    def fit(self, epochs: int) -> list[dict[str, Any]]:
        """Train epochs `self.epoch + 1 .. epochs`; checkpoint, log and maybe stop early after each."""
        cfg = self.cfg
        while self.epoch < epochs:
            epoch = self.epoch + 1
            start = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(epoch))
            row.update(self.evaluate())
            seconds = time.perf_counter() - start
            row["seconds"] = round(seconds, 4)
            row["samples_per_s"] = round(len(self.data.train) / seconds, 1)
            if self.scheduler is not None and cfg.interval == "epoch":
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(row.get("val_loss", row["loss"]))
                else:
                    self.scheduler.step()
            self.epoch = epoch
            stop = self.early_stop(row)
            if stop:
                row["stopped_early"] = True
            self.history.append(row)
            if self.rank == 0 and (epoch % cfg.checkpoint_every == 0 or epoch == epochs or stop):
                self.last_checkpoint = checkpoint.write(self.checkpoints, epoch, self.state(), self.model_hash,
                                                        cfg.keep_checkpoints)
            if self.on_epoch is not None and self.rank == 0:
                self.on_epoch(row)
            if stop:
                break
        return self.history

    def early_stop(self, row: dict[str, Any]) -> bool:
        es = self.cfg.early_stopping
        if es is None:
            return False
        value = row.get(es.monitor)
        if value is None or math.isnan(value):
            return False
        better = self.best is None or (value < self.best - es.min_delta if es.mode == "min" else
                                       value > self.best + es.min_delta)
        if better:
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= es.patience
