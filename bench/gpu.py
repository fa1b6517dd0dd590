"""Compiled training on CUDA: samples/s of specs/transformer_encoder.yaml at batch 1024 with the
shared loop, eager against `train.compile` (torch.compile, mode reduce-overhead: CUDA graphs), in
fp32 and bf16 (goal: compiled >= 3x eager); then one epoch of bf16 training on the GPU and an ONNX
export of that CUDA-trained run with its parity check in onnxruntime.

    PYTHONPATH=. python bench/gpu.py        # about 2-3 minutes on one H200, most of it compiling

Without CUDA it says so and exits 0. Each figure is the median samples/s of epochs 2-4 (epoch 1 pays
for compiling and for recording the CUDA graphs); no validation split, so an epoch is training only.
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

SPEC = ROOT / "specs/transformer_encoder.yaml"
BATCH, SAMPLES, EPOCHS = 1024, 65536, 4  # 64 steps an epoch, no short last batch
GOAL = 3.0


def rate(folder: Path, precision: str, compiled: bool) -> float:
    import specc
    sets = [f"train.batch_size={BATCH}", f"train.data.synthetic.samples={SAMPLES}", "train.data.val_split=0.0",
            f"train.precision={precision}"]
    t0 = time.perf_counter()
    result = specc.train(SPEC, sets, device="cuda", epochs=EPOCHS, compile=compiled, progress=False, force=True,
                         out=folder / f"{precision}-{'compiled' if compiled else 'eager'}")
    rates = [row["samples_per_s"] for row in result.history[1:]]
    print(f"  {precision:<5} {'compiled' if compiled else 'eager':<9} {statistics.median(rates):>12,.0f} samples/s"
          f"   (epochs 2-{EPOCHS}: {', '.join(f'{r:,.0f}' for r in rates)}; run {time.perf_counter() - t0:.1f} s)",
          flush=True)
    return statistics.median(rates)


def trained_and_exported(folder: Path) -> bool:
    """One bf16 epoch on the GPU, then the run exported to ONNX and checked against the eager model."""
    import specc
    t0 = time.perf_counter()
    result = specc.train(SPEC, [f"train.batch_size={BATCH}", "train.precision=bf16"], device="cuda", epochs=1,
                         progress=False, force=True, out=folder / "bf16-epoch")
    row = result.final
    print(f"  one bf16 epoch on cuda: loss {row['loss']:.4f}, val_accuracy {row['val_accuracy']:.3f}, "
          f"{row['samples_per_s']:,.0f} samples/s ({time.perf_counter() - t0:.1f} s with the build)", flush=True)
    try:
        report = specc.export(result.run_dir, ("onnx",), latency=False, out=lambda s: print("  " + s, flush=True))
    except Exception as e:  # a missing onnxruntime, say: report it rather than lose the figures above
        print(f"  ONNX export failed: {type(e).__name__}: {e}")
        return False
    worst = max((c.max_abs_err for c in report.checks), default=float("nan"))
    print(f"  ONNX parity of the CUDA-trained run: {'passed' if report.passed else 'FAILED'}, "
          f"{len(report.checks)} checks, max abs err {worst:.2e}")
    return report.passed


def main() -> int:
    import torch
    if not torch.cuda.is_available():
        print(f"bench/gpu.py: no CUDA device here (torch {torch.__version__}); it measures compiled training on a "
              "GPU, so nothing was measured")
        return 0
    print(f"== compiled training, {SPEC.name}, batch {BATCH}, {SAMPLES} samples an epoch, "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for precision in ("fp32", "bf16"):
            eager, compiled = rate(folder, precision, False), rate(folder, precision, True)
            ratio = compiled / eager
            ok &= ratio >= GOAL
            print(f"  {precision}: compiled / eager = {ratio:.2f}x  {'OK' if ratio >= GOAL else 'UNDER'} "
                  f"(goal >= {GOAL:g}x)", flush=True)
        ok &= trained_and_exported(folder)
    print("all goals met" if ok else "some goals were not met (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
