"""torch.export: a `.pt2` with dynamic shapes from the spec's symbolic dims, saved and reloaded."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from compiler.errors import first_line

from compiler.spec import InputDecl

from .artifact import Artifact, staged
from .capture import capture
from .errors import ExportError, raise_if_io
from .inputs import torch_dynamic_shapes


def export(module: torch.nn.Module, example: list[torch.Tensor], inputs: Mapping[str, InputDecl],
           path: Path) -> Artifact:
    start = time.perf_counter()
    with capture() as cap:
        try:
            program = torch.export.export(module, tuple(example), dynamic_shapes=torch_dynamic_shapes(inputs))
        except Exception as e:
            raise_if_io(e, path)
            text = str(e)
            m = re.search(r"Constraints violated \((\w+)\)", text)
            if m:
                raise ExportError("pt2", f"torch.export cannot keep dim '{m.group(1)}' dynamic: the model "
                                  f"specializes it to the example size",
                                  "recurrent layers (GRU, LSTM, RNN) unroll time in torch.export; export onnx or "
                                  "torchscript for a dynamic time axis") from None
            raise ExportError("pt2", f"torch.export failed: {first_line(e)}",
                              "export onnx or torchscript instead") from None
        with staged(path) as tmp:
            torch.export.save(program, str(tmp))
    return Artifact("pt2", path, time.perf_counter() - start, [], cap.summary(), "torch.export")


def load_program(path: Path) -> Any:
    return torch.export.load(str(path))


def load(path: Path) -> Callable[[list[torch.Tensor]], Any]:
    module = load_program(path).module()
    return lambda xs: module(*xs)
