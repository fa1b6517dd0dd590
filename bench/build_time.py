"""Build time of a 48-block residual MLP spec against instantiating the hand-written module
(goal: ratio <= 3). Both include weight initialisation; the spec side also parses, checks,
infers shapes on meta and generates the fx code.
    python bench/build_time.py
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import specc  # noqa: E402
from common import interleaved, report  # noqa: E402

SPEC = ROOT / "bench/residual_mlp.yaml"


class Residual(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x))) + x


class ResidualMLP(nn.Module):
    def __init__(self, dim=256, hidden=512, depth=48):
        super().__init__()
        self.blocks = nn.ModuleList([Residual(dim, hidden) for _ in range(depth)])
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def main() -> float:
    a, b = ResidualMLP(), specc.build(SPEC)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    medians = interleaved({"hand-written": ResidualMLP, "specc.build": lambda: specc.build(SPEC)}, rounds=15)
    return report("build a 48-block residual MLP (12.6M parameters)", "hand-written", medians, limit=3.0)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
