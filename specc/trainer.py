"""`specc train`: pick the run, prepare it, lock it, and drive the shared loop.

    specc.train("specs/mlp2_zigzag.yaml", epochs=5)
    specc.train("runs/seed-mlp2-zigzag", resume=True)
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from compiler.errors import SpecError, file_loc
from compiler.pipeline import compile_spec
from compiler.spec import Spec

from . import api, checkpoint, components, distributed
from .data import Data, load_data, stats_json
from .fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from .lock import RunLock
from .loop import Loop, TrainingDiverged
from .metrics import write_csv, write_plot
from .progress import make_progress
from .runs import (CHECKPOINTS, RUNS, SPEC, SUMMARY, WEIGHTS, has_checkpoints, is_run, latest_run, load_weights,
                   state_bytes, target_path)
from .trainspec import TrainConfig, parse_train

__all__ = ["train", "TrainResult", "TrainingDiverged"]


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    epochs: int
    resumed_from: int  # 0: a fresh start

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def prepare_run(target: Any, params: Any, resume: bool, force: bool) -> tuple[Path, Spec]:
    """The run folder to train, built or updated from the target and overrides."""
    path = target_path(target)
    if is_run(path):
        run_dir = path
        spec = api.load_run(run_dir) if not params else api.load(run_dir / SPEC, params)
    else:
        spec = api.load(path, params)
        run_dir = RUNS / spec.name
    has_ckpt = has_checkpoints(run_dir)
    if has_ckpt and not resume and not force:
        raise SpecError.at(file_loc(str(run_dir)), "this run has been trained already",
                           "pass --resume to continue it, or --force to start it over")
    if has_ckpt and resume:
        old = api.load(run_dir / SPEC)
        if old.model_hash != spec.model_hash:
            raise SpecError.at(file_loc(str(run_dir)), "the overrides change the model of a run being resumed",
                               "only train settings (epochs, lr, ...) may change on --resume")
        if spec.hash != old.hash:  # train settings changed: keep the run's spec.yaml current
            atomic_write_text(run_dir / SPEC, api.resolved_yaml(spec, str(path)))
        return run_dir, spec
    if not is_run(run_dir) or force or spec.hash != api.load(run_dir / SPEC).hash:
        api.build_run(spec, out=run_dir, force=True, origin=str(path))
    return run_dir, spec


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError.at(file_loc("--device"), f"device '{name}' asked for, but CUDA is not available",
                               "use --device cpu or device: auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SpecError.at(file_loc("--device"), f"there is no {name}; this machine has "
                               f"{torch.cuda.device_count()} CUDA device(s)", "use cuda:0 or auto")
    return torch.device(name)


def train(target: Any = None, params: Any = None, *, epochs: int | None = None, device: str | None = None,
          resume: bool = False, force: bool = False, nproc: int = 1, tensorboard: bool = False,
          progress: bool = True) -> TrainResult:
    """Train a spec or a run with the shared loop; see DESIGN §3."""
    dist_env = distributed.env()
    if nproc > 1 and dist_env is None:
        run_dir, spec = prepare_run(target, params, resume, force)
        parse_train(spec)  # fail here, once, rather than in every worker
        with RunLock(run_dir):
            distributed.launch(nproc, run_dir, epochs=epochs, device=device, resume=resume or has_checkpoints(run_dir))
        return _result_from_run(run_dir)
    if dist_env is not None:  # a worker started by torchrun
        run_dir = target_path(target) if target is not None else latest_run()
        spec = api.load(run_dir / SPEC, params)
        lock = RunLock(run_dir) if dist_env.rank == 0 and not os.environ.get(distributed.LOCK_HELD) else None
        resume = resume or has_checkpoints(run_dir)
    else:
        run_dir, spec = prepare_run(target, params, resume, force)
        lock = RunLock(run_dir)
    cfg = parse_train(spec)
    with lock or contextlib.nullcontext():
        return _train(run_dir, spec, cfg, epochs, device, resume, tensorboard, progress, dist_env)


def _result_from_run(run_dir: Path) -> TrainResult:
    found = checkpoint.latest(run_dir / CHECKPOINTS, api.load(run_dir / SPEC).model_hash)
    history = found[1]["history"] if found else []
    return TrainResult(run_dir, history, len(history), 0)


def _train(run_dir: Path, spec: Spec, cfg: TrainConfig, epochs: int | None, device_name: str | None, resume: bool,
           tensorboard: bool, show_progress: bool, dist_env: Any) -> TrainResult:
    rank, world = (dist_env.rank, dist_env.world) if dist_env else (0, 1)
    device = _device(device_name or cfg.device)
    if dist_env is not None:
        device = distributed.setup(dist_env, device)
    total = epochs if epochs is not None else cfg.epochs
    if total < 1:
        raise SpecError.at(file_loc("--epochs"), f"epochs must be at least 1, got {total}", "--epochs 10")
    compiled = compile_spec(spec)
    module = compiled.module
    load_weights(module, run_dir / WEIGHTS)
    module.to(device)
    task = cfg.task
    out_shape = next(iter(compiled.typed.graph.outputs))[1]
    out_dims = compiled.typed.shape_of(out_shape)
    n_out = out_dims[-1] if out_dims and isinstance(out_dims[-1], int) else None
    data = load_data(cfg.data, spec, task, n_out, cfg.seed)
    if device.type == "cuda":
        data = _to_device(data, device)
    loss_fn, optimizer, scheduler = _components(cfg, module)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    model = distributed.wrap(module, device) if world > 1 else module
    mh = spec.model_hash
    loop = Loop(model, module, loss_fn, optimizer, scheduler, scaler, cfg, data, device, task, mh,
                run_dir / CHECKPOINTS, rank, world)
    start = 0
    if resume:
        found = checkpoint.latest(run_dir / CHECKPOINTS, mh)
        if found is not None:
            loop.restore(found[1])
            loop.last_checkpoint = found[0]
            start = loop.epoch
            if rank == 0 and start >= total:
                print(f"{run_dir} is already trained for {start} epochs; pass --epochs N (> {start}) to train further")
    if start == 0:  # dropout and friends; a resumed run restores the RNG state instead
        torch.manual_seed(cfg.seed + 1000 * rank)
    writer = _tensorboard(run_dir) if tensorboard and rank == 0 else None
    progress = make_progress(total, show_progress) if rank == 0 else None
    loop.progress = progress

    def on_epoch(row: dict[str, Any]) -> None:
        write_csv(run_dir / "metrics.csv", loop.history)
        if progress is not None:
            progress.end_epoch(row)
        if writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    writer.add_scalar(k, v, row["epoch"])
            writer.flush()

    loop.on_epoch = on_epoch
    if rank == 0:
        atomic_write_text(run_dir / "normalization.json", stats_json(data.stats))
    try:
        history = loop.fit(total)
    except TrainingDiverged:
        if rank == 0 and loop.history:
            write_plot(run_dir / "loss.png", loop.history, spec.name)
        raise
    finally:
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
    if rank == 0:
        atomic_write_bytes(run_dir / WEIGHTS, state_bytes(module))  # metrics.csv is written after every epoch
        write_plot(run_dir / "loss.png", history, spec.name)
        summary = api.read_json(run_dir / SUMMARY)
        summary["trained"] = {"epochs": loop.epoch, "final": history[-1] if history else {}, "device": str(device),
                              "precision": cfg.precision, "world_size": world}
        atomic_write_json(run_dir / SUMMARY, summary)
    if dist_env is not None:
        distributed.teardown()
    return TrainResult(run_dir, history, loop.epoch, start)


def _to_device(data: Data, device: torch.device) -> Data:
    """Small data sets move to the GPU once, so batches are slices on the device."""
    size = sum(t.numel() * t.element_size() for s in (data.train, data.val) if s for t in s.inputs + [s.target])
    if size > 2**30:
        return data
    for s in (data.train, data.val):
        if s is not None:
            s.inputs = [t.to(device) for t in s.inputs]
            s.target = s.target.to(device)
    return data


def _components(cfg: TrainConfig, module: torch.nn.Module) -> tuple[Any, Any, Any]:
    """Build the loss, optimizer and scheduler; torch's own argument errors point at their spec line."""
    built = []
    for comp, make in ((cfg.loss, lambda c: components.make_loss(c.name, c.kwargs)),
                       (cfg.optimizer, lambda c: components.make_optimizer(c.name, c.kwargs, module.parameters()))):
        try:
            built.append(make(comp))
        except (TypeError, ValueError, RuntimeError) as e:
            raise SpecError.at(comp.loc, f"cannot create {comp.name}: {str(e).splitlines()[0]}",
                               "check its arguments against the torch documentation") from None
    loss_fn, optimizer = built
    sched = cfg.scheduler
    try:
        scheduler = components.make_scheduler(sched.name if sched else None, sched.kwargs if sched else {},
                                              optimizer, cfg.warmup)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        loc = sched.loc if sched else cfg.loc
        raise SpecError.at(loc, f"cannot create the scheduler: {str(e).splitlines()[0]}",
                           "check its arguments against the torch documentation") from None
    return loss_fn, optimizer, scheduler


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SpecError.at(file_loc("--tensorboard"), "TensorBoard logging needs the tensorboard package",
                           "pip install tensorboard") from None
    return SummaryWriter(str(run_dir / "tensorboard"))
