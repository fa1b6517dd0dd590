"""Training progress: a rich bar with loss and samples/s in a terminal, one line per epoch elsewhere."""
from __future__ import annotations

import sys
import time
from typing import Any


def _fmt(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}"]
    for k, v in row.items():
        if k in ("epoch", "seconds", "samples_per_s") or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    parts.append(f"{row.get('samples_per_s', 0):,.0f} samples/s  {row.get('seconds', 0):.2f}s")
    return "  ".join(parts)


class LineProgress:
    """For CI logs and pipes: one line per epoch."""

    def __init__(self, epochs: int, out: Any = None):
        self.epochs, self.out = epochs, out or sys.stdout

    def start_epoch(self, epoch: int, batches: int) -> None:
        pass

    def step(self, samples: int, loss: Any) -> None:
        pass

    def end_epoch(self, row: dict[str, Any]) -> None:
        print(f"[{row['epoch']}/{self.epochs}] " + _fmt(row).split("  ", 1)[1], file=self.out, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A live bar per epoch; the loss shown is refreshed every log_every steps, so the bar costs no syncs."""

    def __init__(self, epochs: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.epochs = epochs
        self.bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                            TextColumn("{task.fields[rate]} samples/s"), TimeRemainingColumn(), transient=False)
        self.bar.start()
        self.task = None
        self.samples, self.t0, self.steps = 0, time.perf_counter(), 0

    def start_epoch(self, epoch: int, batches: int) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task("", total=batches, epoch=epoch, epochs=self.epochs, loss="-", rate="-")
        self.samples, self.t0, self.steps = 0, time.perf_counter(), 0

    def step(self, samples: int, loss: Any) -> None:
        """`loss` is given every log_every steps only: reading it waits for the device."""
        self.samples += samples
        self.steps += 1
        fields = {}
        if loss is not None or self.steps == 1:
            rate = self.samples / max(time.perf_counter() - self.t0, 1e-9)
            fields = {"rate": f"{rate:,.0f}"}
            if loss is not None:
                fields["loss"] = f"{float(loss):.4g}"
        self.bar.update(self.task, advance=1, **fields)

    def end_epoch(self, row: dict[str, Any]) -> None:
        self.bar.console.print(_fmt(row))

    def close(self) -> None:
        self.bar.stop()


def make_progress(epochs: int, enabled: bool = True) -> Any:
    if not enabled:
        return None
    return RichProgress(epochs) if sys.stdout.isatty() else LineProgress(epochs)
