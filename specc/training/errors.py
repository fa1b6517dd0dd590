"""How training stops short, torch-free so the CLI can report it: the loss diverged (exit 1), a
signal stopped it with a checkpoint (exit 128 + signal), or DDP workers failed."""
from __future__ import annotations

import signal
import sys
from pathlib import Path


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: the work ran and failed (exit 1)."""

    def __init__(self, epoch: int, step: int, global_step: int, value: float, last_good: Path | None):
        self.epoch, self.step, self.global_step, self.value, self.last_good = epoch, step, global_step, value, last_good
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written before it"
        super().__init__(f"loss became {value} at epoch {epoch}, step {step} (global step {global_step}); {where}")


class Interrupted(Exception):
    """SIGINT or SIGTERM: the loop stopped at a step boundary and wrote a checkpoint there."""

    def __init__(self, signum: int, checkpoint: Path | None, epoch: int, batches: int):
        self.signum, self.checkpoint, self.epoch, self.batches = signum, checkpoint, epoch, batches
        where = f"after {batches} batches of epoch {epoch + 1}" if batches else f"after epoch {epoch}"
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}; the checkpoint is {checkpoint}")


class WorkersFailed(Exception):
    def __init__(self, code: int):
        self.code = code
        super().__init__(f"distributed training failed (torchrun exit {code})")


def stopped(e: BaseException) -> int | None:
    """Print why training stopped and return the exit code; None if `e` is not such a stop."""
    if isinstance(e, TrainingDiverged):
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1
    if isinstance(e, Interrupted):
        print(f"{e}\nhint: continue with specc train RUN --resume", file=sys.stderr)
        return 128 + e.signum
    if isinstance(e, WorkersFailed):
        print(f"error: {e}", file=sys.stderr)
        return 2 if e.code == 2 else 1
    return None
