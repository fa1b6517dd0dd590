"""The GPU figures, in one run (issue 19's part 3):

1. compiled training on CUDA: samples/s of specs/transformer_encoder.yaml at batch 1024 with the
   shared loop, eager against `train.compile` (torch.compile, mode reduce-overhead: CUDA graphs), in
   fp32 and bf16 (goal: compiled >= 3x eager);
2. one epoch of bf16 training on the GPU and an ONNX export of that CUDA-trained run with its
   parity check in onnxruntime;
3. FSDP2 on the GPU: the zoo GPT (12 x 768) trained under torchrun with NCCL and bf16 mixed
   precision, against the same epoch in one plain process (one GPU: one rank, so this checks that
   the sharded path runs and learns as the plain one does, and what it costs);
4. `bench/generate.py --device cuda`: KV-cache decoding on the GPU (specc alone where transformers
   is not installed).

    PYTHONPATH=. python bench/gpu.py [--only 1,2,3,4]     # about 4-5 minutes on one H200

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


def gpt_spec(folder: Path, steps: int = 48, batch: int = 8, block: int = 1024, layers: int = 12, embd: int = 768) -> Path:
    """The zoo GPT (GPT-2 small's sizes by default) over random tokens: `steps` steps of `batch` sequences."""
    import numpy as np
    import yaml
    spec = yaml.safe_load((ROOT / "specs/zoo/gpt.yaml").read_text())
    spec["params"].update(n_layer=layers, n_embd=embd, n_head=12, vocab_size=50304, block_size=block)
    tokens = folder / "tokens.bin"
    np.random.default_rng(0).integers(0, 50304, size=(block + 1) * batch * steps, dtype=np.uint16).tofile(tokens)
    spec["train"] = {"data": {"tokens": str(tokens), "block_size": block, "val_split": 0.0},
                     "loss": "CrossEntropyLoss", "optimizer": {"name": "AdamW", "lr": 3e-4}, "epochs": 2,
                     "batch_size": batch, "precision": "bf16", "seed": 0}
    path = folder / "gpt.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def fsdp_on_cuda(folder: Path, device: str = "cuda", **sizes: int) -> bool:
    import subprocess

    from specc.training.metrics import MetricsLog
    spec, out = gpt_spec(folder, **sizes), {}
    for name, cmd in (("plain", ["-m", "specc", "train", spec, "--device", device]),
                      ("fsdp", ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "specc",
                                "train", spec, "--device", device, "--strategy", "fsdp"])):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, *map(str, cmd), "--out", str(folder / f"gpt-{name}"), "--force", "-q"],
                           capture_output=True, text=True, cwd=folder)
        if r.returncode != 0:
            print(f"  {name}: exit {r.returncode}\n{r.stderr[-3000:]}", flush=True)
            return False
        rows = MetricsLog(folder / f"gpt-{name}" / "metrics.csv").rows()
        out[name] = (float(rows[-1]["loss"]), float(rows[-1]["samples_per_s"]))
        print(f"  {name:<5} loss after 2 epochs {out[name][0]:.4f}, {out[name][1]:,.1f} samples/s (epoch 2; "
              f"{time.perf_counter() - t0:.0f} s with start-up)", flush=True)
    same = abs(out["fsdp"][0] - out["plain"][0]) <= 2e-2 * abs(out["plain"][0])
    print(f"  FSDP (1 rank, NCCL, bf16) / plain: {out['fsdp'][1] / out['plain'][1]:.2f}x the samples/s; "
          f"losses {'agree' if same else 'DIFFER'} within 2%", flush=True)
    return same


def generation_on_cuda() -> bool:
    import subprocess
    r = subprocess.run([sys.executable, str(ROOT / "bench/generate.py"), "--device", "cuda", "--rounds", "3"],
                       capture_output=True, text=True)
    print("\n".join("  " + line for line in (r.stdout + r.stderr[-2000:]).strip().splitlines()), flush=True)
    return r.returncode == 0


def main() -> int:
    import argparse

    import torch
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="1,2,3,4", help="which parts to run, e.g. 3,4")
    parts = {int(p) for p in ap.parse_args().only.split(",")}
    if not torch.cuda.is_available():
        print(f"bench/gpu.py: no CUDA device here (torch {torch.__version__}); it measures training, FSDP and "
              "generation on a GPU, so nothing was measured")
        return 0
    print(f"== {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if 1 in parts:
            print(f"== 1. compiled training, {SPEC.name}, batch {BATCH}, {SAMPLES} samples an epoch", flush=True)
            for precision in ("fp32", "bf16"):
                eager, compiled = rate(folder, precision, False), rate(folder, precision, True)
                ratio = compiled / eager
                ok &= ratio >= GOAL
                print(f"  {precision}: compiled / eager = {ratio:.2f}x  {'OK' if ratio >= GOAL else 'UNDER'} "
                      f"(goal >= {GOAL:g}x)", flush=True)
        if 2 in parts:
            print("== 2. a bf16 epoch on CUDA, exported to ONNX with parity", flush=True)
            ok &= trained_and_exported(folder)
        if 3 in parts:
            print("== 3. FSDP2 on CUDA: the zoo GPT 12 x 768, bf16, 2 epochs of 48 steps of 8 x 1024 tokens", flush=True)
            ok &= fsdp_on_cuda(folder)
        if 4 in parts:
            print("== 4. generation on CUDA (bench/generate.py --device cuda)", flush=True)
            ok &= generation_on_cuda()
    print("all goals met" if ok else "some goals were not met (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
