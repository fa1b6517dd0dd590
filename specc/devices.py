"""Which torch device a command runs on: `auto` (CUDA when there is one), `cpu`, `cuda` or `cuda:N`,
refused at `--device` when this machine cannot give it. Shared by train, generate and serve."""
from __future__ import annotations

from typing import Any

from compiler.errors import SpecError, file_loc


def device_for(name: str) -> Any:
    """A `torch.device` for a --device value."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError.at(file_loc("--device"), f"device '{name}' asked for, but CUDA is not available",
                               "use --device cpu, or --device auto (CUDA when there is one)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SpecError.at(file_loc("--device"), f"there is no {name}; this machine has "
                               f"{torch.cuda.device_count()} CUDA device(s)", "use cuda:0 or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SpecError.at(file_loc("--device"), f"'{name}' is not a device", "use auto, cpu, cuda or cuda:N") from None
