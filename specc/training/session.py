"""`specc train`: pick the run, prepare it, lock it, set the pieces up, and drive the shared loop.

    specc.train("specs/mlp2_zigzag.yaml", epochs=5)
    specc.train("runs/seed-mlp2-zigzag", resume=True)
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compiler.errors import SpecError, file_loc, first_line
from compiler.pipeline import Compiled, compile_spec
from compiler.spec import Spec
from compiler.train_section import TrainConfig

from .. import runs, weights
from ..devices import device_for
from ..fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from . import checkpoint, components, distributed, sharding, targets
from .data import Data, load_data, stats_json
from .lock import RunLock
from .errors import Interrupted, TrainingDiverged
from .loop import Loop, Parts, Where
from .metrics import MetricsLog, write_plot
from .progress import make_progress

__all__ = ["train", "TrainResult", "TrainingDiverged", "Interrupted"]


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    epochs: int
    resumed_from: int  # 0: a fresh start
    weights_from_epoch: int | None = None  # the epoch model.safetensors holds (early stopping: the best)
    speaks: bool = True  # False in a torchrun worker but rank 0's own, and under `--nproc`: the launcher reports

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


@dataclass
class Options:
    """The command-line side of a training run."""

    epochs: int | None = None
    device: str | None = None
    resume: bool = False
    force: bool = False
    nproc: int = 1
    tensorboard: bool = False
    progress: bool = True
    compile: bool | None = None
    out: Path | None = None
    quiet: bool = False
    strategy: str | None = None  # ddp | fsdp (default: train.strategy)
    on_epoch: Any = None  # called with each epoch's metrics row (rank 0), e.g. a sweep's report; may raise to stop
    extra: dict[str, Any] = field(default_factory=dict)


def prepare_run(target: Any, params: Any, opts: Options, locks: contextlib.ExitStack) -> tuple[Path, Spec]:
    """The run folder to train, locked into `locks` first, then built or updated from the target and
    overrides (so no other process can be training the run that a rebuild replaces)."""
    run_dir, spec, origin = runs.run_of(target, params)
    if run_dir is None:
        run_dir = Path(opts.out) if opts.out is not None else runs.RUNS / spec.name
    elif opts.out is not None:
        raise SpecError.at(file_loc("--out"), "--out picks the folder for a spec's run; TARGET is a run already",
                           "pass the spec file, or train the run where it is")
    if run_dir.exists() and not run_dir.is_dir():
        raise SpecError.at(file_loc(str(run_dir)), "run path exists and is not a folder", "pass --out DIR")
    created = not run_dir.exists()
    locks.enter_context(RunLock(run_dir))
    if created:  # a spec that fails to build or train before its first epoch leaves no folder behind
        locks.push(lambda kind, e, tb: _remove_unstarted(run_dir, failed=kind is not None))
    if runs.has_checkpoints(run_dir):
        if not opts.resume and not opts.force:
            part_way = runs.stopped_part_way(run_dir)
            raise SpecError.at(file_loc(str(run_dir)), "this run has been trained already" if part_way is None else
                               f"this run was stopped part-way (its last checkpoint is {part_way.name})",
                               "pass --resume to continue it, or --force to start it over")
        if opts.resume:
            return run_dir, _resumable(run_dir, spec, params, origin, opts.quiet)
    if opts.force or not runs.is_run(run_dir) or runs.load(run_dir).hash != spec.hash:
        from ..building import build_run
        build_run(spec, out=run_dir, force=True, origin=origin)
    return run_dir, spec


def _resumable(run_dir: Path, spec: Spec, params: Any, origin: str, quiet: bool) -> Spec:
    """A resumed run may change train settings only; its spec.yaml is kept current. Whether a change
    came from the spec file or from --set, the message says which."""
    old = runs.load(run_dir)
    base = runs.load(origin) if params else spec  # the spec file (or run) alone, without the overrides
    if old.model_hash != spec.model_hash:
        if base.model_hash == old.model_hash:
            raise SpecError.at(file_loc(str(run_dir)), "the overrides change the model of a run being resumed",
                               "only train settings (epochs, lr, ...) may change on --resume")
        raise SpecError.at(file_loc(str(run_dir)), f"the model in {origin} has changed since this run was trained",
                           f"resume the run itself (specc train {run_dir} --resume), or start over with --force")
    if spec.hash != old.hash:
        if not quiet:
            changed = ", ".join(_changed_settings(old, spec))
            print(f"note: the train settings in {origin} changed since the last run; resuming with the new ones "
                  f"({changed})" if base.hash != old.hash else
                  f"note: resuming with the train settings the overrides change ({changed})", file=sys.stderr)
        atomic_write_text(run_dir / runs.SPEC, runs.resolved_yaml(spec, origin))
    return spec


def _changed_settings(old: Spec, new: Spec) -> list[str]:
    """The train keys (or other top-level sections) whose values differ between two specs."""
    a, b = old.resolved(), new.resolved()
    ta, tb = a.get("train") or {}, b.get("train") or {}
    keys = [k for k in dict.fromkeys([*ta, *tb]) if ta.get(k) != tb.get(k)]
    return keys + [k for k in dict.fromkeys([*a, *b]) if k != "train" and a.get(k) != b.get(k)]


def train(target: Any = None, params: Any = None, *, progress: bool = True, **options: Any) -> TrainResult:
    """Train a spec or a run with the shared loop; see DESIGN §3."""
    opts = Options(progress=progress, **options)
    dist_env = distributed.env()
    with contextlib.ExitStack() as locks:
        if dist_env is not None:  # a worker started by torchrun
            run_dir = runs.target_path(target)
            spec = runs.load(run_dir, params)
            if dist_env.rank == 0 and not os.environ.get(distributed.LOCK_HELD):
                locks.enter_context(RunLock(run_dir))
            opts.resume = opts.resume or runs.has_checkpoints(run_dir)
        else:
            run_dir, spec = prepare_run(target, params, opts, locks)
        config(spec)  # fail here, once, rather than in every worker
        if opts.nproc > 1 and dist_env is None:
            opts.resume = opts.resume or runs.has_checkpoints(run_dir)
            distributed.launch(opts.nproc, run_dir, opts)
            return _result(run_dir, 0)
        return _Session(run_dir, spec, opts, dist_env).run()


def _remove_unstarted(run_dir: Path, failed: bool) -> None:
    """A run folder this command made, when it holds only the lock, or when training failed before
    anything worth keeping (a checkpoint, a metrics row) was written: a half-made run is no run."""
    if not run_dir.is_dir():
        return
    names = {p.name for p in run_dir.iterdir()}
    if names == {".lock"} or (failed and not runs.has_checkpoints(run_dir) and "metrics.csv" not in names):
        import shutil
        shutil.rmtree(run_dir, ignore_errors=True)


def config(spec: Spec) -> TrainConfig:
    if spec.train is None:
        raise SpecError.at(spec.tree.loc, "the spec has no 'train:' section",
                           "add train: with data, loss, optimizer and epochs (DESIGN §3)")
    return spec.train


def _result(run_dir: Path, start: int) -> TrainResult:
    history = MetricsLog(run_dir / "metrics.csv").rows()
    rows = [{k: _number(v, k == "epoch") for k, v in r.items()} for r in history]
    trained = runs.read_json(run_dir / runs.SUMMARY).get("trained") or {}
    return TrainResult(run_dir, rows, int(rows[-1]["epoch"]) if rows else 0, start, trained.get("weights_from_epoch"))


def _number(v: str, integer: bool = False) -> Any:
    """A metrics.csv cell: the epoch an int, a metric a float (an accuracy of "1" too), flags bools."""
    if v in ("True", "False"):
        return v == "True"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if integer and f.is_integer() else f


class _Session:
    """One process's training of one run: everything `fit` needs, and the files around it."""

    def __init__(self, run_dir: Path, spec: Spec, opts: Options, dist_env: Any):
        self.run_dir, self.spec, self.opts, self.dist_env = run_dir, spec, opts, dist_env
        self.cfg = config(spec)
        self.rank, self.world = (dist_env.rank, dist_env.world) if dist_env else (0, 1)
        self.strategy = opts.strategy or self.cfg.strategy

    def run(self) -> TrainResult:
        cfg, opts = self.cfg, self.opts
        total = opts.epochs if opts.epochs is not None else cfg.epochs
        if total < 1:
            raise SpecError.at(file_loc("--epochs"), f"epochs must be at least 1, got {total}", "--epochs 10")
        device = device_for(opts.device or cfg.device)
        if self.dist_env is not None:
            device = distributed.setup(self.dist_env, device)
        compiled = compile_spec(self.spec)
        weights.load_file(compiled.module, self.run_dir / runs.WEIGHTS)
        data = self.data(compiled, device)
        loop = self.loop(compiled, data, device)
        start = self.resume(loop, total)
        return self.fit(loop, total, start, data)

    def data(self, compiled: Compiled, device: torch.device) -> Data:
        layout = targets.layout(self.spec, compiled.typed, self.cfg)
        data = load_data(self.cfg.data, self.spec, layout.task, layout.classes, self.cfg.seed)
        if layout.target is None:  # npz: only the file could tell the target's shape
            layout = targets.layout(self.spec, compiled.typed, self.cfg, data.target_shape)
        note = targets.check_classes(self.spec, compiled.typed, self.cfg, layout, data.classes)
        if note and self.rank == 0 and not self.opts.quiet:
            print(note, file=sys.stderr)
        data.class_dim, data.flatten = layout.class_dim, layout.flatten
        if device.type == "cuda":
            _to_device(data, device)
        return data

    def loop(self, compiled: Compiled, data: Data, device: torch.device) -> Loop:
        cfg, module = self.cfg, compiled.module
        module.to(device)
        sharder = sharding.Sharder.of(compiled, cfg, self.world) if self.strategy == "fsdp" else None
        if sharder is not None:  # before the optimizer: sharding replaces the parameters
            module = sharder.shard(module)
        loss_fn, optimizer, scheduler = _components(cfg, module, data.flatten)
        scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        model = (sharder.wrap(module) if sharder is not None else
                 distributed.wrap(module, device) if self.world > 1 else module)
        parts = Parts(model, module, loss_fn, optimizer, scheduler, scaler, sharded=sharder)
        use_compile = self.opts.compile if self.opts.compile is not None else cfg.compile
        where = Where(cfg, data, device, self.run_dir / runs.CHECKPOINTS, self.spec.model_hash, self.rank, self.world)
        loop = Loop(parts, where)
        if use_compile:
            from .compiled import compile_step
            parts.step_fn = compile_step(loop, device)
        return loop

    def resume(self, loop: Loop, total: int) -> int:
        start = 0
        log = MetricsLog(self.run_dir / "metrics.csv")
        if self.opts.resume:
            found = checkpoint.latest(self.run_dir / runs.CHECKPOINTS, self.spec.model_hash)
            if found is not None:
                loop.restore(found[1])
                loop.last_checkpoint = found[0]
                start = loop.pos.epoch
                if self.rank == 0 and start >= total and not loop.pos.batches and not self.opts.quiet:
                    print(f"{self.run_dir} is already trained for {start} epochs; pass --epochs N (> {start}) "
                          "to train further")
        if start == 0 and not loop.pos.batches:  # dropout and friends; a resumed run restores the RNG state instead
            torch.manual_seed(self.cfg.seed + 1000 * self.rank)
        if self.rank == 0:
            log.rewind(start)
        return start

    def fit(self, loop: Loop, total: int, start: int, data: Data) -> TrainResult:
        rank0 = self.rank == 0
        writer = _tensorboard(self.run_dir) if self.opts.tensorboard and rank0 else None
        progress = make_progress(total, self.opts.progress and not self.opts.quiet) if rank0 else None
        log = MetricsLog(self.run_dir / "metrics.csv")
        loop.progress = progress
        loop.on_epoch = lambda row: _logged(row, log, progress, writer, self.opts.on_epoch)
        if rank0:
            atomic_write_text(self.run_dir / "normalization.json", stats_json(data.stats))
        ok = False
        try:
            loop.fit(total)
            ok = True
        except (TrainingDiverged, Interrupted):
            if rank0:
                self.finish(loop, final=False)
            raise
        finally:
            if self.dist_env is not None and not ok:
                distributed.teardown(loop.parts, ok=False)
            log.close()
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()
        whole = sharding.whole_bytes(loop.parts) if loop.parts.sharded is not None else None  # a collective
        if rank0:
            self.finish(loop, final=True, whole=whole)
        if self.dist_env is not None:
            distributed.teardown(loop.parts)
        result = _result(self.run_dir, start)
        result.speaks = distributed.speaks(self.dist_env)
        return result

    def finish(self, loop: Loop, final: bool, whole: bytes | None = None) -> None:
        """The plot, and after a complete run the trained weights and the summary."""
        history = MetricsLog(self.run_dir / "metrics.csv").rows()
        if history:
            write_plot(self.run_dir / "loss.png", history, self.spec.name)
        if not final:
            return
        module, pos, es = loop.parts.module, loop.pos, self.cfg.early_stopping
        # under FSDP the weights were gathered from the shards (`whole`): the best epoch's are not kept there
        best = whole is None and es is not None and es.restore_best and loop.best_weights is not None
        if best:  # the final checkpoint keeps the last epoch's state, for --resume --epochs N
            module.load_state_dict(loop.best_weights)
        atomic_write_bytes(self.run_dir / runs.WEIGHTS, whole if whole is not None else weights.state_bytes(module))
        summary = runs.read_json(self.run_dir / runs.SUMMARY)
        last = {k: _number(v, k == "epoch") for k, v in history[-1].items()} if history else {}
        summary["trained"] = {"epochs": pos.epoch, "final": last, "device": str(loop.where.device),
                              "precision": self.cfg.precision, "world_size": self.world, "strategy": self.strategy,
                              "weights_from_epoch": pos.best_epoch if best else pos.epoch}
        if es is not None and pos.best is not None:
            summary["trained"]["best"] = {"monitor": es.monitor, "value": pos.best, "epoch": pos.best_epoch}
        if loop.where.data.classes:
            summary["classes"] = loop.where.data.classes
        atomic_write_json(self.run_dir / runs.SUMMARY, summary)


def _logged(row: dict[str, Any], log: MetricsLog, progress: Any, writer: Any, report: Any = None) -> None:
    log.append(row)
    if progress is not None:
        progress.end_epoch(row)
    if writer is not None:
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "epoch":
                writer.add_scalar(k, v, row["epoch"])
        writer.flush()
    if report is not None:
        report(row)


def _to_device(data: Data, device: torch.device) -> None:
    """Small in-memory data sets move to the GPU once, so batches are slices on the device."""
    from .samples import TensorSamples
    for split in (data.train, data.val):
        s = split.samples if split is not None else None
        if isinstance(s, TensorSamples) and sum(t.numel() * t.element_size() for t in s.inputs + [s.target]) <= 2**30:
            s.to(device)
        elif split is not None:
            split.pin = True


def _components(cfg: TrainConfig, module: torch.nn.Module, flatten: bool) -> tuple[Any, Any, Any]:
    """Build the loss, optimizer and scheduler; torch's own argument errors point at their spec line."""
    built = []
    learned = [p for p in module.parameters() if p.requires_grad]  # `trainable: false` leaves some out
    for comp, make in ((cfg.loss, lambda c: components.make_loss(c.name, c.kwargs, flatten)),
                       (cfg.optimizer, lambda c: components.make_optimizer(c.name, c.kwargs, learned))):
        try:
            built.append(make(comp))
        except (TypeError, ValueError, RuntimeError) as e:
            raise SpecError.at(comp.loc, f"cannot create {comp.name}: {first_line(e)}",
                               "check its arguments against the torch documentation") from None
    loss_fn, optimizer = built
    sched = cfg.scheduler
    try:
        scheduler = components.make_scheduler(sched.name if sched else None, sched.kwargs if sched else {},
                                              optimizer, cfg.warmup)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        loc = sched.loc if sched else cfg.loc
        raise SpecError.at(loc, f"cannot create the scheduler: {first_line(e)}",
                           "check its arguments against the torch documentation") from None
    return loss_fn, optimizer, scheduler


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SpecError.at(file_loc("--tensorboard"), "TensorBoard logging needs the tensorboard package",
                           "pip install tensorboard") from None
    return SummaryWriter(str(run_dir / "tensorboard"))
