"""Spec diff: per node, what changed between two compiled specs, and which tensors of A's weights
would load into B, be skipped, or mismatch in shape."""
from __future__ import annotations

from typing import Any, Mapping

from .shapes import TypedGraph, fmt_shape


def _nodes(typed: TypedGraph) -> dict[str, dict[str, Any]]:
    return {n.path: {"op": n.op.name, "shape": fmt_shape(typed.info[n.path].shape),
                     "parameters": typed.info[n.path].params, "line": n.loc.line} for n in typed.graph.nodes}


def diff(a: TypedGraph, b: TypedGraph, a_tensors: Mapping[str, tuple[list[int], str]],
         b_tensors: Mapping[str, tuple[list[int], str]]) -> dict[str, Any]:
    """Node changes and checkpoint compatibility; tensors are name -> (shape, dtype)."""
    na, nb = _nodes(a), _nodes(b)
    nodes = []
    for path in list(na) + [p for p in nb if p not in na]:
        x, y = na.get(path), nb.get(path)
        if x is None or y is None:
            nodes.append({"node": path, "status": "added" if x is None else "removed", "a": x, "b": y})
            continue
        changes = {k: [x[k], y[k]] for k in ("op", "shape", "parameters") if x[k] != y[k]}
        nodes.append({"node": path, "status": "changed" if changes else "same", "changes": changes,
                      "a": x, "b": y})
    tensors = []
    for key, (shape, dtype) in a_tensors.items():
        if key not in b_tensors:
            tensors.append({"tensor": key, "status": "skipped", "a": shape})
        elif list(b_tensors[key][0]) != list(shape) or b_tensors[key][1] != dtype:
            tensors.append({"tensor": key, "status": "mismatch", "a": list(shape), "b": list(b_tensors[key][0]),
                            "a_dtype": dtype, "b_dtype": b_tensors[key][1]})
        else:
            tensors.append({"tensor": key, "status": "loads", "a": list(shape)})
    for key, (shape, _) in b_tensors.items():
        if key not in a_tensors:
            tensors.append({"tensor": key, "status": "missing", "b": list(shape)})
    count = lambda items, s: sum(1 for i in items if i["status"] == s)  # noqa: E731
    return {
        "parameters": {"a": a.parameters, "b": b.parameters},
        "nodes": nodes,
        "node_counts": {s: count(nodes, s) for s in ("same", "changed", "added", "removed")},
        "tensors": tensors,
        "tensor_counts": {s: count(tensors, s) for s in ("loads", "skipped", "mismatch", "missing")},
    }
