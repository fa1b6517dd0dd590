"""Per-epoch metrics (loss; accuracy, per token or pixel, for classification; MAE and R² for
regression), metrics.csv (appended, rewound on resume) and the loss-curve PNG."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch

from ..fsutil import atomic_write_bytes, atomic_write_text

_SUMS = ("loss", "n", "correct", "elems", "abs_err", "sq_err", "y_sum", "y_sq", "steps")


class Meter:
    """Sums over an epoch, kept on the device and read once at the end (no host sync per step).

    It also remembers the first step whose loss was not finite, on the device too."""

    def __init__(self, task: str, device: torch.device, class_dim: int = -1):
        self.task, self.class_dim = task, class_dim
        for k in _SUMS:
            setattr(self, k, torch.zeros((), dtype=torch.float64, device=device))
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_value = torch.zeros((), dtype=torch.float64, device=device)

    @classmethod
    def restored(cls, state: dict[str, Any] | None, task: str, device: torch.device, class_dim: int = -1) -> "Meter":
        m = cls(task, device, class_dim)
        for k, v in (state or {}).items():
            if k in _SUMS:
                setattr(m, k, torch.tensor(float(v), dtype=torch.float64, device=device))
        return m

    def state(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in _SUMS}

    @torch.no_grad()
    def add(self, loss: torch.Tensor, out: torch.Tensor, target: torch.Tensor) -> None:
        n = target.shape[0]
        self.steps += 1
        value = loss.detach().double()
        bad = ~torch.isfinite(value) & (self.bad_step < 0)
        self.bad_step = torch.where(bad, self.steps.long(), self.bad_step)
        self.bad_value = torch.where(bad, value, self.bad_value)
        self.n += n
        self.loss += value * n
        self.elems += target.numel()
        if self.task == "classification":
            self.correct += (out.argmax(self.class_dim) == target).sum()
        elif self.task == "binary":
            self.correct += ((out > 0).to(target.dtype) == target).sum()
        else:
            err = out.detach().double() - target.double()
            self.abs_err += err.abs().sum()
            self.sq_err += (err ** 2).sum()
            self.y_sum += target.double().sum()
            self.y_sq += (target.double() ** 2).sum()

    def first_bad(self) -> tuple[int, float] | None:
        """(step in the epoch, value) of the first non-finite loss, if any (reads the device)."""
        step = int(self.bad_step)
        return None if step < 0 else (step, float(self.bad_value))

    def packed(self) -> torch.Tensor:
        return torch.stack([getattr(self, k) for k in _SUMS])

    def unpack(self, packed: torch.Tensor) -> None:
        for k, v in zip(_SUMS, packed):
            setattr(self, k, v)

    def result(self, prefix: str = "") -> dict[str, float]:
        n, elems = max(self.n.item(), 1), max(self.elems.item(), 1)
        out = {f"{prefix}loss": self.loss.item() / n}
        if self.task in ("classification", "binary"):
            out[f"{prefix}accuracy"] = self.correct.item() / elems
        else:
            out[f"{prefix}mae"] = self.abs_err.item() / elems
            total = self.y_sq.item() - self.y_sum.item() ** 2 / elems  # sum of (y - mean)^2
            out[f"{prefix}r2"] = 1 - self.sq_err.item() / total if total > 0 else float("nan")
        return out


def _cell(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


class MetricsLog:
    """metrics.csv, one row per epoch, appended as epochs end (no rewrite, no fsync: a crash can
    leave rows past the last checkpoint, which `rewind` drops on resume)."""

    def __init__(self, path: Path):
        self.path = path
        self.fields: list[str] | None = None

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
        new = not self.path.is_file() or self.path.stat().st_size == 0
        if self.fields is None and not new:
            with self.path.open(newline="") as f:
                self.fields = next(csv.reader(f), None)
        if new or not self.fields:
            self.fields = list(row)
            new = True
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _cell(row.get(k, "")) for k in self.fields})


def _floats(rows: list[dict[str, Any]], key: str) -> list[float | None]:
    out = []
    for r in rows:
        try:
            out.append(float(r[key]) if r.get(key) not in (None, "") else None)
        except (TypeError, ValueError):
            out.append(None)
    return out


def write_plot(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """loss and val_loss against epoch (log scale when they span decades), and accuracy if any."""
    import matplotlib
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
