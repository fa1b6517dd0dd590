"""An export job: everything the exporters need about one model, built once per `specc export`.

    job = ExportJob(module, spec.inputs, outputs, run_dir / "export", cfg, dims=typed.dims)
    to_onnx.export(job)   # -> Artifact
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.fx as fx

from compiler.export_section import ExportConfig
from compiler.spec import DimDecl, InputDecl

from .inputs import example_inputs

FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt"}


@dataclass
class ExportJob:
    module: fx.GraphModule  # the reference: eval mode, the run's weights
    inputs: Mapping[str, InputDecl]
    outputs: dict[str, Any]  # output name -> the spec's typed shape, e.g. ("batch", "steps", 6)
    export_dir: Path
    config: ExportConfig = field(default_factory=ExportConfig)
    dims: Mapping[str, DimDecl] = field(default_factory=dict)  # constraints of the symbolic dims
    metadata: dict[str, str] = field(default_factory=dict)  # written into the ONNX file as specc.*
    shapes: dict[str, Any] = field(default_factory=dict)  # spec node path or input name -> typed shape
    weight_bytes: int = 0
    on_step: Callable[[str], None] | None = None  # the ONNX exporter's progress lines
    example: list[torch.Tensor] = field(default_factory=list)  # the trace inputs (from the inputs if empty)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # shared work: the torch.export program

    def __post_init__(self) -> None:
        if not self.example:
            self.example = example_inputs(self.inputs, self.config.seed, self.dims, self.config.dims)

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)

    def path(self, fmt: str) -> Path:
        return self.export_dir / FILES[fmt]

    def shape_of(self, node: Any) -> tuple:
        """The spec's shape of an fx node's value (an input, a spec node, or an element of a tuple)."""
        import operator
        if not isinstance(node, fx.Node):
            return ()
        if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], fx.Node):
            whole = self.shape_of(node.args[0])
            index = node.args[1]
            return whole[index] if isinstance(index, int) and index < len(whole) else ()
        shape = self.shapes.get(node.meta.get("specc_path") or node.name, ())
        return shape if isinstance(shape, tuple) else ()

    def node(self, path: str) -> fx.Node | None:
        """The fx node of a spec node path."""
        return next((n for n in self.module.graph.nodes if n.meta.get("specc_path") == path), None)
