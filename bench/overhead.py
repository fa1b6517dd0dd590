"""Run-time overhead of a spec-built model against the hand-written one (goal: ratio <= 1.03).

The article's transformer encoder, forward + backward at batch 32, same weights, interleaved.
    python bench/overhead.py
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import handwritten as hw  # noqa: E402
import specc  # noqa: E402
from common import interleaved, report  # noqa: E402


def main() -> float:
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ref = hw.TransformerEncoder(4, 64, 128, 16, 10)
    model = specc.build(ROOT / "specs/transformer_encoder.yaml")
    x = torch.randn(32, 16, 64)
    target = torch.randint(0, 10, (32,))
    loss = torch.nn.CrossEntropyLoss()

    def step(m):
        def run():
            m.zero_grad(set_to_none=True)
            loss(m(x), target).backward()
        return run

    medians = interleaved({"hand-written": step(ref), "specc": step(model)}, rounds=60, inner=5)
    return report("transformer encoder fwd+bwd, batch 32", "hand-written", medians, limit=1.03)


if __name__ == "__main__":
    main()
