"""Memory per rank, FSDP against DDP: the zoo GPT trained by `specc train --nproc N` both ways.

Two figures for each strategy, from the real runs:
- parameter + optimizer state per rank: the bytes of rank 0's checkpoint shard (FSDP's
  `__0_0.distcp`) against the whole checkpoint every DDP rank holds a copy of; the goal is 1/N;
- peak resident memory of the largest worker (the run is built beforehand, so the launcher stays
  small), less that of a process that only imports torch and specc (what every rank pays regardless).
  Every rank still compiles the whole model before sharding it, and rank 0 gathers the whole
  weights at the end, so the peak falls less than the state does.

    python bench/fsdp.py                                  # GPT-2 small: 12 layers x 768, ~124M params
    python bench/fsdp.py --layers 4 --embd 256 --vocab 8192   # a quick look
"""
import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


def spec_file(folder: Path, args: argparse.Namespace) -> Path:
    """The zoo GPT with a train section over random tokens: two steps per rank of batch 2."""
    spec = yaml.safe_load((ROOT / "specs/zoo/gpt.yaml").read_text())
    spec["params"].update(n_layer=args.layers, n_embd=args.embd, n_head=args.heads, vocab_size=args.vocab,
                          block_size=args.block)
    tokens = folder / "tokens.bin"
    rng = np.random.default_rng(0)
    rng.integers(0, args.vocab, size=(args.block + 1) * 2 * args.nproc * 2, dtype=np.uint16).tofile(tokens)
    spec["train"] = {"data": {"tokens": str(tokens), "block_size": args.block}, "loss": "CrossEntropyLoss",
                     "optimizer": {"name": "AdamW", "lr": 3e-4}, "epochs": 1, "batch_size": 2,
                     "checkpoint": {"min_interval_s": 0}}
    path = folder / "gpt.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def peak_rss_mb(cmd: list[str], cwd: Path) -> float:
    """The largest peak resident set of `cmd`'s processes (ru_maxrss of the waited-for children),
    measured in a fresh interpreter so earlier runs do not count."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=cwd, check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


def state_mb(run: Path, strategy: str) -> float:
    """Parameters + optimizer state one rank holds, from the last checkpoint on disk."""
    ck = sorted((run / "checkpoints").iterdir())[-1]
    if strategy == "fsdp":
        return (ck / "__0_0.distcp").stat().st_size / 2**20
    return ck.stat().st_size / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--embd", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--nproc", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = spec_file(folder, args)
        base = peak_rss_mb([sys.executable, "-c", "import torch, specc.training.session"], folder)
        rows = {}
        for strategy in ("ddp", "fsdp"):  # built first, so the launcher holds no model while the ranks run
            run = folder / strategy
            subprocess.run([sys.executable, "-m", "specc", "build", str(spec), "--out", str(run), "-q"], check=True)
            cmd = [sys.executable, "-m", "specc", "train", str(run), "--nproc", str(args.nproc), "--strategy",
                   strategy, "-q"]
            rss = peak_rss_mb(cmd, folder)
            rows[strategy] = (state_mb(folder / strategy, strategy), rss)
    (ddp_state, ddp_rss), (fsdp_state, fsdp_rss) = rows["ddp"], rows["fsdp"]
    print(f"== FSDP vs DDP memory per rank: GPT {args.layers} layers x {args.embd}, vocab {args.vocab}, "
          f"block {args.block}, AdamW, {args.nproc} gloo processes on CPU")
    print(f"  {'':6} {'params+optimizer':>18} {'peak RSS':>10} {'RSS - import':>14}")
    for name, (state, rss) in rows.items():
        print(f"  {name:6} {state:15.1f} MB {rss:7.0f} MB {rss - base:11.0f} MB")
    print(f"  ratio fsdp/ddp: params+optimizer {fsdp_state / ddp_state:.3f} (goal 1/{args.nproc} = "
          f"{1 / args.nproc:.3f}), peak RSS above import {(fsdp_rss - base) / (ddp_rss - base):.3f}")


if __name__ == "__main__":
    main()
