"""DDP through torchrun (`torch.distributed.run`): gloo on CPU, NCCL on CUDA, rank 0 writes.

`specc train RUN --nproc N` launches N local workers with torchrun. Multi-node runs use torchrun
directly: `torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:PORT -m specc train RUN`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(nproc: int, run_dir: Path, epochs: int | None, device: str | None, resume: bool) -> None:
    """Run `torchrun --standalone --nproc-per-node N -m specc train RUN` and wait for it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "specc", "train", str(run_dir)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    if device is not None:
        cmd += ["--device", device]
    if resume:
        cmd += ["--resume"]
    environ = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    environ[LOCK_HELD] = "1"
    code = subprocess.run(cmd, env=environ).returncode
    if code != 0:
        raise WorkersFailed(code)


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise SpecError.at(file_loc("--nproc"), f"--nproc must be at least 1, got {nproc}", "--nproc 2")
