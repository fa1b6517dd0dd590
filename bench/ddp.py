"""DDP throughput on CPU: 2 gloo processes (torchrun) against 1 process, same global batch.
Reports samples/s of each from metrics.csv and the ratio. On a 2-core machine expect little gain:
each process gets one core and the gradients cross a socket every step.
    python bench/ddp.py
"""
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests/cases/train/blobs_dropout.yaml"


def run(nproc: int, batch: int, folder: Path) -> float:
    cmd = [sys.executable, "-m", "specc", "train", str(SPEC), "--nproc", str(nproc), "--set", "train.epochs=4",
           "--set", f"train.batch_size={batch}", "--set", "train.data.synthetic.samples=20000"]
    subprocess.run(cmd, cwd=folder, check=True, capture_output=True)
    rows = list(csv.DictReader(open(folder / "runs/blobs-dropout/metrics.csv")))
    return statistics.median(float(r["samples_per_s"]) for r in rows[1:])


def main() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp, "one"), Path(tmp, "two")
        one.mkdir(), two.mkdir()
        s1 = run(1, 64, one)
        s2 = run(2, 32, two)
    print("== DDP on CPU (gloo), global batch 64, 16k training samples")
    print(f"  1 process              {s1:10,.0f} samples/s")
    print(f"  2 processes (torchrun) {s2:10,.0f} samples/s")
    print(f"  ratio 2/1 = {s2 / s1:.2f}")
    return s2 / s1


if __name__ == "__main__":
    main()
