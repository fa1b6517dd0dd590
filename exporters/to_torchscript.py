"""TorchScript: `torch.jit.script` of the GraphModule, falling back to `torch.jit.trace`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from compiler.errors import first_line

from .artifact import Artifact, staged
from .capture import capture
from .errors import ExportError, raise_if_io

DEPRECATED = "TorchScript is deprecated in PyTorch 2.x; prefer pt2 or onnx for new deployments"


def export(module: torch.nn.Module, example: list[torch.Tensor], path: Path) -> Artifact:
    start = time.perf_counter()
    notes = [DEPRECATED]
    with capture() as cap:
        try:
            scripted = torch.jit.script(module)
            method = "script"
        except Exception as e:  # TorchScript rejects many Python constructs
            reason = first_line(e, 200)
            try:
                scripted = torch.jit.trace(module, tuple(example), check_trace=False)
            except Exception as e2:
                raise_if_io(e2, path)
                raise ExportError("torchscript", f"neither script nor trace worked: {first_line(e2, 200)}",
                                  "export pt2 or onnx instead") from None
            method = "trace"
            notes.append(f"scripting failed ({reason}); traced instead")
        with staged(path) as tmp:
            scripted.save(str(tmp))
    cap.warnings = [w for w in cap.warnings if "deprecated" not in w and "instance-level annotations" not in w]
    return Artifact("torchscript", path, time.perf_counter() - start, notes, cap.summary(), method)


def load(path: Path) -> Callable[[list[torch.Tensor]], Any]:
    module = torch.jit.load(str(path), map_location="cpu")
    module.train(False)  # eval mode
    return lambda xs: module(*xs)


def loaded_module(path: Path) -> Any:
    return torch.jit.load(str(path), map_location="cpu")
