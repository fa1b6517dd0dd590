"""An example specc plugin: `LearnedSwish`, x * sigmoid(beta * x) with one learnable beta per feature.

Installed, it makes `op: LearnedSwish` available in specs, with its arguments checked, its
`num_features` inferred from the input's last dim, and its export formats declared.
"""
import inspect

import torch
import torch.nn as nn


class LearnedSwish(nn.Module):
    def __init__(self, num_features: int, beta: float = 1.0):
        super().__init__()
        self.beta = nn.Parameter(torch.full((num_features,), float(beta)))

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


def specc_ops():
    return [{
        "name": "LearnedSwish",
        "module": LearnedSwish,
        "args": {"num_features": (int, inspect.Parameter.empty), "beta": (float, 1.0)},
        "infer": ("num_features", -1),
        # the example declares no TorchScript support, so specc refuses that format for it
        "formats": ["onnx", "pt2", "compile"],
        "doc": "x * sigmoid(beta * x), beta learnable per feature",
    }]
