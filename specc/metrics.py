"""Per-epoch metrics (loss; accuracy for classification; MAE and R² for regression), metrics.csv
and the loss-curve PNG."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch

from .fsutil import atomic_write_bytes, atomic_write_text


class Meter:
    """Sums over an epoch on the device, read once at the end (no sync per step)."""

    def __init__(self, task: str, device: torch.device):
        self.task = task
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.loss, self.n, self.correct, self.abs_err, self.sq_err, self.y_sum, self.y_sq, self.elems = (
            z() for _ in range(8))

    @torch.no_grad()
    def add(self, loss: torch.Tensor, out: torch.Tensor, target: torch.Tensor) -> None:
        n = target.shape[0]
        self.n += n
        self.loss += loss.detach().double() * n
        if self.task == "classification":
            self.correct += (out.argmax(-1) == target).sum()
        elif self.task == "binary":
            self.correct += ((out > 0).to(target.dtype) == target).sum() / max(target[0].numel(), 1)
        else:
            err = out.detach().double() - target.double()
            self.abs_err += err.abs().sum()
            self.sq_err += (err ** 2).sum()
            self.elems += target.numel()
            self.y_sum += target.double().sum()
            self.y_sq += (target.double() ** 2).sum()

    def result(self, prefix: str = "") -> dict[str, float]:
        n = max(self.n.item(), 1)
        out = {f"{prefix}loss": self.loss.item() / n}
        if self.task in ("classification", "binary"):
            out[f"{prefix}accuracy"] = self.correct.item() / n
        else:
            elems = max(self.elems.item(), 1)
            out[f"{prefix}mae"] = self.abs_err.item() / elems
            total = self.y_sq.item() - self.y_sum.item() ** 2 / elems  # sum of (y - mean)^2
            out[f"{prefix}r2"] = 1 - self.sq_err.item() / total if total > 0 else float("nan")
        return out


def write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    fields = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def write_plot(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """loss and val_loss against epoch (log scale when they span decades), and accuracy if any."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    has_acc = any("val_accuracy" in r or "accuracy" in r for r in history)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 6, 4), squeeze=False)
    ax = axes[0][0]
    for key in ("loss", "val_loss"):
        ys = [r.get(key) for r in history]
        if any(y is not None for y in ys):
            ax.plot(epochs, ys, label=key, marker="." if len(epochs) < 40 else None)
    losses = [r[k] for r in history for k in ("loss", "val_loss") if isinstance(r.get(k), float) and r[k] > 0]
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
            ys = [r.get(key) for r in history]
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
