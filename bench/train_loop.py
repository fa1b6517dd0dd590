"""specc's training loop against a bare hand-written loop: same model, data, batch and optimizer.
One epoch each, in turns, after a warm-up epoch. The specc epoch is `Loop.train_epoch` itself: its
order, batches, metrics on the device and NaN bookkeeping.
- the transformer encoder on synthetic sequences (goal: time-per-step ratio <= 1.05): the model dominates;
- a digits-like small CNN (1,200 16×16 PNG training images from a class folder tree, 2 convs, batch 32),
  where the loop's own cost shows: specc's epoch with its evaluation pass against a bare loop that
  indexes batches of the decoded tensors, its evaluation pass included (goal <= 1.1).
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


def _bare_epoch(model, opt, loss, x, y, batch_size: int, seed: int) -> None:
    """A hand-written epoch: a seeded order, batches indexed from tensors, no bookkeeping."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    model.train()
    for i in range(0, len(y), batch_size):
        idx = perm[i:i + batch_size]
        loss(model(x[idx]), y[idx]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _both(spec, lr: float):
    """The spec's data; specc's Loop over one build; a second build, its Adam and the loss for the bare loop."""
    cfg = spec.train
    data = load_data(cfg.data, spec, cfg.task, 10, cfg.seed)
    a, b = specc.build(spec), specc.build(spec)
    loss = torch.nn.CrossEntropyLoss()
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=lr), torch.optim.Adam(b.parameters(), lr=lr)
    loop = Loop(Parts(a, a, loss, opt_a), Where(cfg, data, torch.device("cpu"), Path("/nonexistent"), spec.model_hash))
    return data, loop, (b, opt_b, loss)


def main() -> float:
    torch.manual_seed(0)
    spec = specc.load(SPEC, ["train.data.synthetic.samples=2048", "train.data.val_split=0.0"])
    cfg = spec.train
    data, loop, (b, opt_b, loss) = _both(spec, lr=1e-3)
    steps = math.ceil(len(data.train) / cfg.batch_size)
    x, y = data.train.samples.inputs[0], data.train.samples.target
    epoch = [0]

    def bare():
        epoch[0] += 1
        _bare_epoch(b, opt_b, loss, x, y, cfg.batch_size, epoch[0])

    def ours():
        epoch[0] += 1
        loop.train_epoch(epoch[0])

    medians = interleaved({"bare loop": bare, "specc loop": ours}, rounds=11, warmup=1)
    medians = {k: v / steps for k, v in medians.items()}  # per step
    return report(f"training step, transformer encoder, batch {cfg.batch_size} ({steps} steps/epoch, "
                  f"{torch.get_num_threads()} threads)", "bare loop", medians, limit=1.05)


CNN = """specc: 1
name: digits-bench
inputs:
  x: [batch, 1, 16, 16]
layers:
  - {op: Conv2d, out_channels: 16, kernel_size: 3, padding: 1}
  - ReLU
  - {op: MaxPool2d, kernel_size: 2}
  - {op: Conv2d, out_channels: 32, kernel_size: 3, padding: 1}
  - ReLU
  - {op: AdaptiveAvgPool2d, output_size: 1}
  - {op: flatten, start_dim: 1}
  - {name: head, op: Linear, out_features: 10}
train:
  data: {images: digits, val_split: 0.2, normalize: standard}
  loss: CrossEntropyLoss
  optimizer: {name: Adam, lr: 0.003}
  batch_size: 32
"""


def _digits(root: Path, per_class: int = 150) -> None:
    """10 classes of 16×16 grey PNGs: a class's stroke at its place, with noise (1,500 images)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for k in range(10):
        (root / str(k)).mkdir(parents=True)
        for i in range(per_class):
            px = rng.integers(0, 60, (16, 16))
            px[k:k + 4, 2 + k // 2:8 + k // 2] += 180
            Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(root / str(k) / f"{i}.png")


def small_cnn(threads: int = 1) -> float:
    """One thread by default: a model this small gains nothing from more, and on a shared machine two
    OpenMP threads measure the scheduler (ratios from 0.77 to 3.2 within an hour here, both ways)."""
    import tempfile
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:  # kept while timing: a folder too large to cache is read per batch
            return _small_cnn(Path(tmp))
    finally:
        torch.set_num_threads(before)


def _small_cnn(tmp: Path) -> float:
    torch.manual_seed(0)
    _digits(tmp / "digits")
    (tmp / "digits.yaml").write_text(CNN)
    spec = specc.load(tmp / "digits.yaml")
    cfg = spec.train
    data, loop, (b, opt_b, loss) = _both(spec, lr=3e-3)
    # the bare loop's data: the same decoded, normalized images, as plain tensors
    xs, ys = data.train.samples.take(torch.as_tensor(data.train.idx), 0)
    (vx,), vy = data.val.samples.take(torch.as_tensor(data.val.idx), 0)
    x, y = xs[0], ys
    epoch = [0]

    def bare():
        epoch[0] += 1
        _bare_epoch(b, opt_b, loss, x, y, cfg.batch_size, epoch[0])
        b.eval()
        with torch.no_grad():
            correct = total = 0.0
            for i in range(0, len(vy), cfg.batch_size):
                out = b(vx[i:i + cfg.batch_size])
                total += float(loss(out, vy[i:i + cfg.batch_size])) * len(out)
                correct += float((out.argmax(1) == vy[i:i + cfg.batch_size]).sum())

    def ours():
        epoch[0] += 1
        loop.train_epoch(epoch[0])
        loop.evaluate()

    medians = interleaved({"bare loop": bare, "specc loop": ours}, rounds=11, warmup=1)
    return report(f"epoch + evaluation, digits-like small CNN: {len(y)} training and {len(vy)} validation "
                  f"16x16 images, batch {cfg.batch_size} ({torch.get_num_threads()} threads)", "bare loop",
                  medians, limit=1.1)


if __name__ == "__main__":
    main()
    small_cnn()
