"""DDP through torchrun (`torch.distributed.run`): gloo on CPU, NCCL on CUDA, rank 0 writes.

`specc train RUN --nproc N` launches N local workers with torchrun. Multi-node runs use torchrun
directly: `torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:PORT -m specc train RUN`.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from compiler.errors import SpecError, file_loc

from .errors import WorkersFailed

LOCK_HELD = "SPECC_RUN_LOCK_HELD"  # the launcher holds the run's lock for its workers


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int


def env() -> DistEnv | None:
    """The torchrun environment of this process, or None when not launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or "RANK" not in os.environ:
        return None
    return DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(e: DistEnv, device: torch.device) -> torch.device:
    if device.type == "cuda":
        device = torch.device("cuda", e.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def teardown(parts: Any = None, ok: bool = True) -> None:
    """Leave the process group while the interpreter is whole.

    The DDP/FSDP wrapper's reducer holds the gloo process group, and a group's worker threads hold
    in-flight work with tensors. If either outlives `main`, it is destroyed during interpreter
    finalization, where releasing those tensors takes a GIL that is going away: std::terminate,
    SIGABRT ("terminate called without an active exception") on a run that has finished. So the
    wrapper is dropped and collected first, then the group is destroyed and collected, here.
    After a failure there is no barrier: the other ranks may never reach it."""
    if parts is not None:
        parts.model = parts.module  # the wrapper, its reducer and its buckets go now
        parts.step_fn = None
    gc.collect()
    if dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()
    gc.collect()


def launch(nproc: int, run_dir: Path, opts: Any) -> None:
    """Run `torchrun --standalone --nproc-per-node N -m specc train RUN` and wait for it. The
    workers are quiet but for rank 0's progress (none with -q); the caller reports the result."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "specc", "train", str(run_dir)]
    if opts.epochs is not None:
        cmd += ["--epochs", str(opts.epochs)]
    if opts.device is not None:
        cmd += ["--device", opts.device]
    if opts.resume:
        cmd += ["--resume"]
    if opts.quiet:
        cmd += ["--quiet"]
    if getattr(opts, "strategy", None):
        cmd += ["--strategy", opts.strategy]
    environ = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    environ[LOCK_HELD] = "1"
    code = subprocess.run(cmd, env=environ).returncode
    if code != 0:
        raise WorkersFailed(code)


def speaks(e: DistEnv | None) -> bool:
    """Whether this process reports the result: a single process, or rank 0 of a torchrun that
    specc did not launch itself (under `--nproc` the launcher reports, once)."""
    return e is None or (e.rank == 0 and not os.environ.get(LOCK_HELD))


def check_strategy(strategy: str | None) -> None:
    if strategy is not None and strategy not in ("ddp", "fsdp"):
        from compiler.errors import did_you_mean
        raise SpecError.at(file_loc("--strategy"), f"unknown strategy {strategy!r}",
                           did_you_mean(strategy, ("ddp", "fsdp"), "strategy") or "--strategy ddp | fsdp")


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise SpecError.at(file_loc("--nproc"), f"--nproc must be at least 1, got {nproc}", "--nproc 2")
