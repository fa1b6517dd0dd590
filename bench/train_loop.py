"""specc's training loop against a bare hand-written loop: same model, data, batch and optimizer
(goal: time-per-step ratio <= 1.05). One epoch each, in turns, after a warm-up epoch. The specc
epoch is `Loop.train_epoch` itself: its order, batches, metrics on the device and NaN bookkeeping.
    python bench/train_loop.py
"""
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import specc  # noqa: E402
from common import interleaved, report  # noqa: E402
from specc.training.data import load_data  # noqa: E402
from specc.training.loop import Loop, Parts, Where  # noqa: E402

SPEC = ROOT / "specs/transformer_encoder.yaml"


def main() -> float:
    torch.manual_seed(0)
    spec = specc.load(SPEC, ["train.data.synthetic.samples=2048", "train.data.val_split=0.0"])
    cfg = spec.train
    data = load_data(cfg.data, spec, cfg.task, 10, cfg.seed)
    a, b = specc.build(spec), specc.build(spec)
    loss = torch.nn.CrossEntropyLoss()
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=1e-3), torch.optim.Adam(b.parameters(), lr=1e-3)
    loop = Loop(Parts(a, a, loss, opt_a), Where(cfg, data, torch.device("cpu"), Path("/nonexistent"), spec.model_hash))
    steps = math.ceil(len(data.train) / cfg.batch_size)
    x, y = data.train.samples.inputs[0], data.train.samples.target
    epoch = [0]

    def bare():
        epoch[0] += 1
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch[0]))
        b.train()
        for i in range(0, len(y), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            out = b(x[idx])
            l = loss(out, y[idx])  # noqa: E741
            l.backward()
            opt_b.step()
            opt_b.zero_grad(set_to_none=True)

    def ours():
        epoch[0] += 1
        loop.train_epoch(epoch[0])

    medians = interleaved({"bare loop": bare, "specc loop": ours}, rounds=11, warmup=1)
    medians = {k: v / steps for k, v in medians.items()}  # per step
    return report(f"training step, transformer encoder, batch {cfg.batch_size} ({steps} steps/epoch, "
                  f"{torch.get_num_threads()} threads)", "bare loop", medians, limit=1.05)


if __name__ == "__main__":
    main()
