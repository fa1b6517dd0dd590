"""Per-epoch metrics (loss; accuracy, per token or pixel, for classification; MAE and R² for
regression), metrics.csv (appended, rewound on resume) and the loss-curve PNG."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import torch

from ..fsutil import atomic_write_bytes, atomic_write_text

_METRIC_SUMS = {"classes": ("correct",), "regression": ("abs_err", "sq_err", "y_sum", "y_sq")}


def _kind(task: str) -> str:
    return "regression" if task == "regression" else "classes"


class Meter:
    """An epoch's (or a validation pass's) loss and metric sums, without a host sync per step.

    Each step's loss is copied into a device buffer of `window` slots and the metric sums add up on
    the device; `flush` reads the buffer (one sync) when it is full, which the loop arranges to be
    every `log_every` steps, and at the end. The host then knows every step's loss, so the first
    non-finite one is named exactly. Batch sizes and element counts are shapes: the host has them.
    """

    def __init__(self, task: str, device: torch.device, class_dim: int = -1, window: int = 50):
        self.task, self.class_dim = task, class_dim
        self.losses = torch.zeros(max(window, 1), dtype=torch.float64, device=device)
        self.pending: list[int] = []  # batch sizes of the steps in the buffer
        self.sums = torch.zeros(len(_METRIC_SUMS[_kind(task)]), dtype=torch.float64, device=device)
        self.loss, self.n, self.elems, self.steps = 0.0, 0, 0, 0  # flushed steps only
        self.bad: tuple[int, float] | None = None  # (step, value) of the first non-finite loss

    @classmethod
    def restored(cls, state: dict[str, Any] | None, task: str, device: torch.device, class_dim: int = -1,
                 window: int = 50) -> "Meter":
        """A meter that continues a checkpoint's partial epoch (its `state()`)."""
        m = cls(task, device, class_dim, window)
        if not state:
            return m
        m.loss, m.n, m.elems, m.steps = float(state["loss"]), int(state["n"]), int(state["elems"]), int(state["steps"])
        m.sums = torch.tensor([float(v) for v in state["sums"]], dtype=torch.float64, device=device)
        return m

    def state(self) -> dict[str, Any]:
        self.flush()
        return {"loss": self.loss, "n": self.n, "elems": self.elems, "steps": self.steps, "sums": self.sums.tolist()}

    @torch.no_grad()
    def add(self, loss: torch.Tensor, out: torch.Tensor, target: torch.Tensor) -> None:
        if len(self.pending) == len(self.losses):
            self.flush()
        self.losses[len(self.pending)] = loss.detach()
        self.pending.append(target.shape[0])
        self.elems += target.numel()
        if self.task == "classification":
            self.sums += (out.argmax(self.class_dim) == target).sum()
        elif self.task == "binary":
            self.sums += ((out > 0).to(target.dtype) == target).sum()
        else:  # |err|, err², y, y² for MAE and R²
            err = out.detach() - target  # per-batch sums in the output's dtype; the epoch's in float64
            self.sums += torch.stack([err.abs().sum(), err.square().sum(), target.sum(), target.square().sum()])

    def flush(self) -> None:
        """Read the buffered losses (a host sync): add them up, and note the first non-finite one."""
        if not self.pending:
            return
        for i, (value, n) in enumerate(zip(self.losses[:len(self.pending)].tolist(), self.pending)):
            if self.bad is None and not math.isfinite(value):
                self.bad = (self.steps + i + 1, value)
            self.loss += value * n
            self.n += n
        self.steps += len(self.pending)
        self.pending.clear()

    def first_bad(self) -> tuple[int, float] | None:
        """(step, value) of the first non-finite loss so far, counting steps from 1 (reads the device)."""
        self.flush()
        return self.bad

    def packed(self) -> torch.Tensor:
        self.flush()
        head = torch.tensor([self.loss, self.n, self.elems, self.steps], dtype=torch.float64, device=self.sums.device)
        return torch.cat([head, self.sums])

    def unpack(self, packed: torch.Tensor) -> None:
        values = packed.tolist()
        self.loss, self.n, self.elems, self.steps = values[0], int(values[1]), int(values[2]), int(values[3])
        self.sums = packed[4:].clone()

    def result(self, prefix: str = "") -> dict[str, float]:
        self.flush()
        n, elems, sums = max(self.n, 1), max(self.elems, 1), self.sums.tolist()
        out = {f"{prefix}loss": self.loss / n}
        if self.task in ("classification", "binary"):
            out[f"{prefix}accuracy"] = sums[0] / elems
        else:
            abs_err, sq_err, y_sum, y_sq = sums
            out[f"{prefix}mae"] = abs_err / elems
            total = y_sq - y_sum ** 2 / elems  # sum of (y - mean)^2
            out[f"{prefix}r2"] = 1 - sq_err / total if total > 0 else float("nan")
        return out


def _cell(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


class MetricsLog:
    """metrics.csv, one row per epoch, appended as epochs end through one open file (flushed, not
    fsynced: a crash can leave rows past the last checkpoint, which `rewind` drops on resume)."""

    def __init__(self, path: Path):
        self.path = path
        self.fields: list[str] | None = None
        self.file: Any = None

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit()]

    def rewind(self, epoch: int) -> None:
        """Keep the rows of epochs 1 .. epoch (a resume continues from there)."""
        rows = [r for r in self.rows() if int(r["epoch"]) <= epoch]
        if not rows:
            self.path.unlink(missing_ok=True)
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())
        self.fields = list(rows[0])

    def append(self, row: dict[str, Any]) -> None:
        if self.file is None:
            new = not self.path.is_file() or self.path.stat().st_size == 0
            if self.fields is None and not new:
                with self.path.open(newline="") as f:
                    self.fields = next(csv.reader(f), None)
            if new or not self.fields:
                self.fields, new = list(row), True
            self.file = self.path.open("a", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=self.fields, extrasaction="ignore")
            if new:
                self.writer.writeheader()
        self.writer.writerow({k: _cell(row.get(k, "")) for k in self.fields})
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _floats(rows: list[dict[str, Any]], key: str) -> list[float | None]:
    out = []
    for r in rows:
        try:
            out.append(float(r[key]) if r.get(key) not in (None, "") else None)
        except (TypeError, ValueError):
            out.append(None)
    return out


def write_plot(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """loss and val_loss against epoch (log scale when they span decades), and accuracy if any.
    Without matplotlib (a dependency, but a bare environment may lack it) there is no picture."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in history]
    has_acc = any(r.get("val_accuracy") not in (None, "") or r.get("accuracy") not in (None, "") for r in history)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 6, 4), squeeze=False)
    ax = axes[0][0]
    for key in ("loss", "val_loss"):
        ys = _floats(history, key)
        if any(y is not None for y in ys):
            ax.plot(epochs, ys, label=key, marker="." if len(epochs) < 40 else None)
    losses = [y for k in ("loss", "val_loss") for y in _floats(history, k) if y is not None and y > 0]
    if losses and max(losses) / min(losses) > 50:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if has_acc:
        ax2 = axes[0][1]
        for key in ("accuracy", "val_accuracy"):
            ys = _floats(history, key)
            if any(y is not None for y in ys):
                ax2.plot(epochs, ys, label=key)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1.02)
        ax2.grid(alpha=0.3)
        ax2.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
