"""TorchScript: `torch.jit.script` of the GraphModule, falling back to `torch.jit.trace`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import blame, rewrite
from .artifact import Artifact, staged
from .capture import capture
from .errors import ExportError, raise_if_io
from .job import ExportJob

DEPRECATED = "TorchScript is deprecated in PyTorch 2.x; prefer pt2 or onnx for new deployments"


def export(job: ExportJob) -> Artifact:
    start = time.perf_counter()
    path = job.path("torchscript")
    module, rewrites = rewrite.for_format("torchscript", job.module, job.example)
    notes = [DEPRECATED] + rewrites
    with capture() as cap:
        try:
            scripted = torch.jit.script(module)
            method = "script"
        except Exception as e:  # TorchScript rejects many Python constructs
            reason = blame.root_cause(e, 200)
            try:
                scripted = torch.jit.trace(module, tuple(job.example), check_trace=False)
            except Exception as e2:
                raise_if_io(e2, path)
                node = blame.culprit(e2, module)
                raise ExportError("torchscript", f"neither script nor trace worked: {blame.root_cause(e2, 200)}"
                                  f"{blame.where(node)}", "export pt2 or onnx instead",
                                  node.meta.get("specc_loc") if node is not None else None) from None
            method = "trace"
            notes.append(f"scripting failed ({reason}); traced instead")
        with staged(path) as tmp:
            scripted.save(str(tmp))
    cap.warnings = [w for w in cap.warnings if "deprecated" not in w and "instance-level annotations" not in w]
    return Artifact("torchscript", path, time.perf_counter() - start, notes, cap.summary(), method)


def loaded_module(path: Path) -> Any:
    with capture():
        module = torch.jit.load(str(path), map_location="cpu")
    module.train(False)  # eval mode
    return module


def load(path: Path) -> Callable[[list[torch.Tensor]], Any]:
    module = loaded_module(path)
    return lambda xs: module(*xs)
