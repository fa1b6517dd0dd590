"""Fault injection shared by tests/reliability and bench/reliability.py: trainers killed with
SIGKILL at random moments (checkpoint writes included), then resumed, compared bit for bit with
an uninterrupted run. Children are forked from a parent that imported torch but never computed
with it, so each restart costs milliseconds, not an interpreter start."""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KILL_SPEC = ROOT / "tests/cases/train/kill.yaml"


@dataclass
class KillStats:
    kills: int = 0
    inside_writes: int = 0  # kills that left a checkpoint temp file behind: they hit a write
    corrupt: int = 0
    lost: int = 0
    exact: bool = False
    epochs: int = 0
    notes: list[str] = field(default_factory=list)


def _child(workdir: str, target: str, resume: bool, epochs: int | None) -> None:
    os.chdir(workdir)
    import torch
    torch.set_num_threads(1)
    import specc
    try:
        if epochs == 0:
            specc.api.build_run(target)
        else:
            specc.train(target, resume=resume, epochs=epochs, progress=False)
    except BaseException as e:  # report through the exit code only
        print(f"child failed: {e!r}", flush=True)
        os._exit(3)
    os._exit(0)


def _run(ctx, workdir: Path, target: str, resume: bool, epochs: int | None, kill_after: float | None,
         kill_in_write: Path | None = None) -> int | None:
    """Run a trainer; SIGKILL it after `kill_after` seconds, or the moment a checkpoint temp file
    appears in `kill_in_write` (that is, in the middle of a checkpoint write)."""
    stale = set(kill_in_write.glob(".epoch-*.tmp")) if kill_in_write is not None else set()
    p = ctx.Process(target=_child, args=(str(workdir), target, resume, epochs))
    p.start()
    if kill_in_write is not None:
        deadline = time.time() + 20
        while p.is_alive() and time.time() < deadline:
            if set(kill_in_write.glob(".epoch-*.tmp")) - stale:  # a write of this run is under way
                os.kill(p.pid, signal.SIGKILL)
                p.join()
                return None
            time.sleep(0.0005)
    elif kill_after is not None:
        p.join(kill_after)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join()
            return None  # killed
    p.join()
    return p.exitcode


def _checkpoints(run: Path) -> tuple[list[int], int, list[str]]:
    """(epochs of the checkpoints that read cleanly, how many are damaged, temp files left)."""
    from specc.training import checkpoint
    good, bad = [], 0
    for epoch, path in checkpoint.listing(run / "checkpoints"):
        try:
            checkpoint.from_bytes(path.read_bytes(), str(path), None)
            good.append(epoch)
        except Exception:
            bad += 1
    temps = [p.name for p in (run / "checkpoints").glob(".*tmp")] if (run / "checkpoints").is_dir() else []
    return good, bad, temps


def kill_and_resume(workdir: Path, kills: int = 50, epochs: int = 240, seed: int = 0) -> KillStats:
    import torch  # imported before forking (never used for compute here), so children start at once
    from safetensors.torch import load_file

    import torch._dynamo  # noqa: F401  (the first optimizer step and meta shape inference import it)
    import matplotlib.pyplot  # noqa: F401  (the loss plot at the end of a run)

    import specc.training.session  # noqa: F401  (loaded once here, so forked children start at once)
    ctx = mp.get_context("fork")
    rng = random.Random(seed)
    stats = KillStats(epochs=epochs)
    ref, chained = workdir / "reference", workdir / "killed"
    ref.mkdir(parents=True), chained.mkdir(parents=True)
    reference = ctx.Process(target=_child, args=(str(ref), str(KILL_SPEC), False, epochs))
    reference.start()  # the uninterrupted run trains alongside the killed one, on the other core
    run = chained / "runs/kill"
    assert _run(ctx, chained, str(KILL_SPEC), False, 0, None) == 0, "building the run failed"
    best = 0
    temps_before: set[str] = set()
    for i in range(kills):
        in_write = run / "checkpoints" if i % 2 else None  # every other kill lands inside a checkpoint write
        code = _run(ctx, chained, str(run), True, epochs, rng.uniform(0.05, 0.6), in_write)
        if code is not None:
            stats.notes.append(f"kill {i}: the trainer finished before the kill (exit {code})")
            break
        stats.kills += 1
        good, bad, temps = _checkpoints(run)
        stats.corrupt += bad
        stats.inside_writes += bool(set(temps) - temps_before)
        temps_before = set(temps)
        newest = max(good, default=0)
        if newest < best:  # a checkpoint that had been complete is gone
            stats.lost += 1
        best = max(best, newest)
    assert _run(ctx, chained, str(run), True, epochs, None) == 0, "the final resume failed"
    reference.join()
    assert reference.exitcode == 0, "the reference run failed"
    a = load_file(ref / "runs/kill/model.safetensors")
    b = load_file(run / "model.safetensors")
    stats.exact = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return stats
