"""The shared training loop: one `fit` for every spec, device, precision and world size.

Resume is exact: an epoch's data order depends only on (seed, epoch) through a DistributedSampler,
and a checkpoint holds the weights, the optimizer, scheduler and scaler state, the RNG states and
the position in the epoch, so continuing from it replays what an uninterrupted run does.

The host never waits for the device inside an epoch: the loss, the metrics and a non-finite check
accumulate on the device and are read every `log_every` steps and at the end of the epoch.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DistributedSampler

from compiler.train_section import TrainConfig

from . import checkpoint
from .errors import Interrupted, TrainingDiverged
from .data import Data
from .metrics import Meter


@dataclass
class Parts:
    """What a run trains with. `model` may be DDP-wrapped; `module` is the bare model for state dicts."""

    model: nn.Module
    module: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    scaler: Any = None  # torch.amp.GradScaler for fp16
    step_fn: Callable | None = None  # forward + loss, compiled when train.compile is on
    sharded: Any = None  # a sharding.Sharder under strategy fsdp: DCP checkpoints, a gathered model at the end


@dataclass
class Where:
    """Where a run trains: its settings, data, device, checkpoint folder and place in the world."""

    cfg: TrainConfig
    data: Data
    device: torch.device
    checkpoints: Path
    model_hash: str
    rank: int = 0
    world: int = 1


@dataclass
class Position:
    epoch: int = 0  # epochs done
    batches: int = 0  # batches done in the epoch under way (a mid-epoch checkpoint)
    global_step: int = 0  # optimizer updates
    best: float | None = None
    bad_epochs: int = 0
    best_epoch: int = 0  # the epoch `best` was seen at


@dataclass
class Loop:
    parts: Parts
    where: Where
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # rank 0: metrics.csv, progress, tensorboard
    progress: Any = None
    pos: Position = field(default_factory=Position)
    meter_state: dict[str, Any] | None = None  # a resumed epoch's partial sums
    last_checkpoint: Path | None = None
    last_write: float | None = None
    stop_signal: int | None = None
    epoch_start_step: int = 0
    epoch_lr: float | None = None  # the lr at the start of the epoch under way: its metrics row shows it
    best_weights: dict[str, torch.Tensor] | None = None  # early stopping's restore_best: the best epoch's, on the CPU

    # --- state ----------------------------------------------------------------------------

    def state(self, meter: Meter | None = None) -> dict[str, Any]:
        p = self.parts
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        pos = self.pos
        return {
            "epoch": pos.epoch, "batches": pos.batches, "global_step": pos.global_step, "best": pos.best,
            "bad_epochs": pos.bad_epochs, "model": p.module.state_dict(), "optimizer": p.optimizer.state_dict(),
            "scheduler": p.scheduler.state_dict() if p.scheduler is not None else None,
            "scaler": p.scaler.state_dict() if p.scaler is not None else None, "rng": rng,
            "meter": meter.state() if meter is not None else None,
            "epoch_lr": self.epoch_lr if meter is not None else None,
            "best_epoch": pos.best_epoch, "best_weights": self.best_weights,  # so they survive a kill and --resume
        }

    def restore(self, state: dict[str, Any]) -> None:
        p = self.parts
        if "sharded" in state or p.sharded is not None:  # DCP, or into a sharded model: resharded in place
            from .sharding import restore
            restore(p, state, self.where.rank)
        else:
            p.module.load_state_dict(state["model"])
            p.optimizer.load_state_dict(state["optimizer"])
        if p.scheduler is not None and state.get("scheduler") is not None:
            p.scheduler.load_state_dict(state["scheduler"])
        if p.scaler is not None and state.get("scaler") is not None:
            p.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["cpu"])
        if torch.cuda.is_available() and "cuda" in state["rng"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.pos = Position(int(state["epoch"]), int(state.get("batches") or 0), int(state["global_step"]),
                            state["best"], int(state["bad_epochs"]), int(state.get("best_epoch") or 0))
        self.best_weights = state.get("best_weights")
        self.meter_state = state.get("meter")
        self.epoch_lr = state.get("epoch_lr")

    def checkpoint(self, meter: Meter | None = None) -> None:
        w = self.where
        if self.parts.sharded is not None:
            self.last_checkpoint = self.parts.sharded.save(self, meter)
            self.last_write = time.monotonic()
            return
        self.last_checkpoint = checkpoint.write(w.checkpoints, self.pos.epoch, self.pos.batches, self.state(meter),
                                                w.model_hash, w.cfg.checkpoint.keep)
        self.last_write = time.monotonic()

    # --- one epoch ----------------------------------------------------------------------------

    def autocast(self) -> Any:
        cfg = self.where.cfg
        if cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.where.device.type, dtype=dtype)

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's sample order: DistributedSampler's, which depends on (seed, epoch) only."""
        w = self.where
        if w.world == 1:  # what DistributedSampler computes for one replica, without a Python list
            return torch.randperm(len(w.data.train), generator=torch.Generator().manual_seed(w.cfg.seed + epoch))
        sampler = DistributedSampler(range(len(w.data.train)), num_replicas=w.world, rank=w.rank, shuffle=True,
                                     seed=w.cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)

    def forward(self, xs: list[torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.parts
        if p.step_fn is not None:
            return p.step_fn(xs, y)
        with self.autocast():
            out = p.model(*xs)
            out = out[0] if isinstance(out, tuple) else out  # a model with several outputs trains on the first
            return p.loss_fn(out, y), out

    def train_epoch(self, epoch: int) -> dict[str, float]:
        p, w, cfg = self.parts, self.where, self.where.cfg
        indices = self.order(epoch)
        n_batches = math.ceil(len(indices) / cfg.batch_size)
        skip, self.pos.batches = self.pos.batches, 0
        self.epoch_start_step = self.pos.global_step - skip // cfg.accumulate
        meter = Meter.restored(self.meter_state, w.data.task, w.device, w.data.class_dim, cfg.log_every)
        self.meter_state = None
        p.model.train()  # the optimizer's gradients are None here: every epoch ends with an update
        if self.progress is not None:
            self.progress.start_epoch(epoch, n_batches)
        batches = w.data.train.batches(indices, cfg.batch_size, w.device, skip, epoch)
        for step, (xs, y) in enumerate(batches, start=skip + 1):
            update = step % cfg.accumulate == 0 or step == n_batches
            sync = contextlib.nullcontext() if update or w.world == 1 else p.model.no_sync()
            with sync:
                loss, out = self.forward(xs, y)
                scaled = loss / cfg.accumulate if cfg.accumulate > 1 else loss
                (p.scaler.scale(scaled) if p.scaler is not None else scaled).backward()
            meter.add(loss, out, y)
            if update:
                self.update()
            if self.progress is not None:
                self.progress.step(len(y) * w.world, loss if step % cfg.log_every == 0 else None)
            if step % cfg.log_every == 0:
                self.check_finite(meter, epoch)
            if update and self.stop_signal is not None and w.world == 1 and step < n_batches:
                self.pos.batches = step
                self.checkpoint(meter)
                raise Interrupted(self.stop_signal, self.last_checkpoint, self.pos.epoch, step)
        self.check_finite(meter, epoch)
        return self.reduce(meter).result()

    def update(self) -> None:
        p, cfg = self.parts, self.where.cfg
        if cfg.grad_clip is not None:
            if p.scaler is not None:
                p.scaler.unscale_(p.optimizer)
            nn.utils.clip_grad_norm_(p.module.parameters(), cfg.grad_clip)
        if p.scaler is not None:
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            p.optimizer.step()
        p.optimizer.zero_grad(set_to_none=True)
        self.pos.global_step += 1
        if p.scheduler is not None and cfg.interval == "step":
            p.scheduler.step()

    def check_finite(self, meter: Meter, epoch: int) -> None:
        """Read the device-side non-finite flag (a host sync, so only every log_every steps)."""
        bad = meter.first_bad()
        if self.where.world > 1 and not self.anyone(bad is not None):
            return  # every rank reads the same verdict, or one would stop while the others wait in a reduce
        if bad is not None or self.where.world > 1:
            step, value = bad if bad is not None else (0, float("nan"))
            global_step = self.epoch_start_step + max(step - 1, 0) // self.where.cfg.accumulate
            raise TrainingDiverged(epoch, step, global_step, value, self.last_checkpoint)

    def anyone(self, flag: bool) -> bool:
        """Whether `flag` holds on any rank (a collective: every rank must call it)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.where.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def reduce(self, meter: Meter) -> Meter:
        """Sum a meter over the ranks (each saw its shard of the epoch)."""
        if self.where.world > 1:
            packed = meter.packed()
            dist.all_reduce(packed)
            meter.unpack(packed)
        return meter

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        w = self.where
        if w.data.val is None:
            return {}
        module = self.parts.module
        module.train(False)  # eval mode
        meter = Meter(w.data.task, w.device, w.data.class_dim, w.cfg.log_every)
        for xs, y in w.data.val.batches(torch.arange(len(w.data.val)), w.cfg.batch_size, w.device):
            with self.autocast():
                out = module(*xs)
                out = out[0] if isinstance(out, tuple) else out
                loss = self.parts.loss_fn(out, y)
            meter.add(loss, out, y)
        return meter.result("val_")

    # --- epochs -------------------------------------------------------------------------------

    def fit(self, epochs: int) -> list[dict[str, Any]]:
        """Train epochs `pos.epoch + 1 .. epochs`; log, maybe checkpoint, maybe stop early after each."""
        rows = []
        self.parts.optimizer.zero_grad(set_to_none=True)
        with self.signals():
            while self.pos.epoch < epochs:
                row = self.epoch(self.pos.epoch + 1)
                rows.append(row)
                if self.where.world > 1 and self.anyone(self.stop_signal is not None):
                    self.stop_signal = self.stop_signal or signal.SIGTERM  # a signal to one rank stops them all
                done = self.pos.epoch == epochs or row.get("stopped_early")
                write = bool(done or self.stop_signal is not None or self.due())
                if self.parts.sharded is not None and self.where.world > 1:
                    write = self.anyone(write)  # every rank writes its shard, or none does
                if write and (self.where.rank == 0 or self.parts.sharded is not None):
                    self.checkpoint()
                if self.on_epoch is not None and self.where.rank == 0:
                    self.on_epoch(row)
                if self.stop_signal is not None and not done:  # a signal in the last epoch: the run is complete
                    raise Interrupted(self.stop_signal, self.last_checkpoint, self.pos.epoch, 0)
                if row.get("stopped_early"):
                    break
        return rows

    def epoch(self, epoch: int) -> dict[str, Any]:
        p = self.parts
        start = time.perf_counter()
        if not self.pos.batches or self.epoch_lr is None:  # a resumed epoch keeps the lr it started with
            self.epoch_lr = p.optimizer.param_groups[0]["lr"]
        row: dict[str, Any] = {"epoch": epoch, "lr": self.epoch_lr}
        row.update(self.train_epoch(epoch))
        row.update(self.evaluate())
        seconds = time.perf_counter() - start
        row["seconds"] = round(seconds, 4)
        row["samples_per_s"] = round(len(self.where.data.train) / max(seconds, 1e-9), 1)
        if p.scheduler is not None and self.where.cfg.interval == "epoch":
            if isinstance(p.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                p.scheduler.step(row.get("val_loss", row["loss"]))
            else:
                p.scheduler.step()
        self.pos.epoch = epoch
        row["stopped_early"] = self.early_stop(row)
        return row

    def due(self) -> bool:
        """A checkpoint every `every` epochs, but not sooner than `min_interval_s` after the last."""
        ck = self.where.cfg.checkpoint
        if self.pos.epoch % ck.every:
            return False
        return self.last_write is None or time.monotonic() - self.last_write >= ck.min_interval_s

    def early_stop(self, row: dict[str, Any]) -> bool:
        es = self.where.cfg.early_stopping
        if es is None:
            return False
        value = row.get(es.monitor)
        if value is None or math.isnan(value):
            return False
        pos = self.pos
        better = pos.best is None or (value < pos.best - es.min_delta if es.mode == "min" else
                                      value > pos.best + es.min_delta)
        if better:
            pos.best, pos.bad_epochs, pos.best_epoch = value, 0, pos.epoch
            if es.restore_best:
                self.best_weights = {k: v.detach().to("cpu", copy=True)
                                     for k, v in self.parts.module.state_dict().items()}
            return False
        pos.bad_epochs += 1
        return pos.bad_epochs >= es.patience

    @contextlib.contextmanager
    def signals(self) -> Any:
        """SIGINT and SIGTERM stop the loop at the next step boundary, with a checkpoint there."""
        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self.stop_signal = signum

        saved = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                saved[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
        try:
            yield
        finally:
            for sig, old in saved.items():
                signal.signal(sig, old)

