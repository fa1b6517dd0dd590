"""The build summary: one row per graph node, Keras `summary()` style, as plain data."""
from __future__ import annotations

from typing import Any

from .fold import plan
from .shapes import TypedGraph, fmt_shape, human_bytes
from .spec import Spec


def summarize(spec: Spec, typed: TypedGraph) -> dict[str, Any]:
    """The `summary.json` document (DESIGN §5), also used to print the table."""
    nodes = []
    for name, inp in spec.inputs.items():
        nodes.append({"name": name, "op": "input", "shape": fmt_shape(inp.shape), "parameters": 0,
                      "line": inp.loc.line})
    folded = plan(typed.graph)
    for n in typed.graph.nodes:
        info = typed.info[n.path]
        row = {"name": n.path, "op": n.op.name, "shape": fmt_shape(info.shape), "parameters": info.params,
               "line": n.loc.line}
        if n.path in folded.constant and n.op.kind != "tensor":
            row["constant"] = True  # computed once at build (see compiler/fold.py)
        nodes.append(row)
    return {
        "name": spec.name,
        "spec_hash": spec.hash,
        "parameters": typed.parameters,
        "trainable_parameters": typed.trainable,
        "parameter_bytes": typed.bytes,
        "size": human_bytes(typed.bytes),
        "inputs": {k: v.as_dict() for k, v in spec.inputs.items()},
        "outputs": {name: fmt_shape(typed.shape_of(v)) for name, v in typed.graph.outputs},
        "symbolic_dims": typed.symbols,
        "nodes": nodes,
    }
