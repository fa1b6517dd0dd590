"""Graph pictures (`specc build --graph FILE`): Graphviz DOT and Mermaid text.

Nodes show name, op, output shape and parameters; each block instance is a cluster; an edge into a
merge (add, cat, ...) from anything but the node just before it is a residual connection, drawn
dashed and coloured so residual paths stand out.
"""
from __future__ import annotations

import re
from typing import Iterator

from .resolve import Scope
from .shapes import TypedGraph, fmt_shape

_ID = re.compile(r"[^0-9A-Za-z_]")


def _id(path: str) -> str:
    return "n_" + _ID.sub("_", path)


def _label(typed: TypedGraph, path: str) -> tuple[str, str, str, int]:
    node = typed.graph.node(path)
    info = typed.info[path]
    return path, node.op.name, fmt_shape(info.shape), info.params


_MERGES = {"add", "sub", "mul", "cat", "stack"}


def _edges(typed: TypedGraph) -> Iterator[tuple[str, str, bool]]:
    """(source id, target id, residual): an edge into a merge (add, cat, ...) from anything but the
    node just before it is a residual (skip) connection."""
    order = [n.path for n in typed.graph.nodes]
    previous = {p: order[i - 1] if i else None for i, p in enumerate(order)}
    for node in typed.graph.nodes:
        for v in node.inputs:
            residual = node.op.name in _MERGES and len(node.inputs) > 1 and v.node != previous[node.path]
            yield _id(v.node), _id(node.path), residual
    for name, v in typed.graph.outputs:
        yield _id(v.node), "out_" + _ID.sub("_", name), False


def _walk(scope: Scope, depth: int = 1) -> Iterator[tuple[str, object, str]]:
    """('open', scope, pad) / ('node', path, pad) / ('close', scope, pad) in nesting order."""
    pad = "  " * depth
    for item in scope.items:
        if item.kind == "op":
            for n in item.nodes:
                yield "node", n.path, pad
        else:
            for sub in item.scopes:
                yield "open", sub, pad
                yield from _walk(sub, depth + 1)
                yield "close", sub, pad


def to_dot(typed: TypedGraph, title: str) -> str:
    lines = [f'digraph "{title}" {{', '  rankdir=TB; newrank=true;',
             '  node [shape=box, style="rounded,filled", fillcolor="#f7f7f7", fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555", arrowsize=0.6];',
             f'  label="{title}"; labelloc=t; fontname="Helvetica"; fontsize=14;']
    for name, inp in typed.graph.inputs.items():
        lines.append(f'  {_id(name)} [label="{name}\\ninput  {fmt_shape(inp.shape)}", shape=ellipse, fillcolor="#e3f2fd"];')
    for kind, obj, pad in _walk(typed.graph.root):
        if kind == "open":
            lines.append(f'{pad}subgraph cluster_{_ID.sub("_", obj.path)} {{')
            lines.append(f'{pad}  label="{obj.path} ({obj.block})"; style="rounded,dashed"; color="#90a4ae"; '
                         f'fontsize=10;')
        elif kind == "close":
            lines.append(f"{pad}}}")
        else:
            path, op, shape, params = _label(typed, obj)
            extra = f"\\n{params:,} params" if params else ""
            fill = "#fff3e0" if params else "#f7f7f7"
            lines.append(f'{pad}{_id(path)} [label="{path}\\n{op}  {shape}{extra}", fillcolor="{fill}"];')
    for name, v in typed.graph.outputs:
        lines.append(f'  out_{_ID.sub("_", name)} [label="{name}\\noutput  {fmt_shape(typed.shape_of(v))}", '
                     f'shape=ellipse, fillcolor="#e8f5e9"];')
    for src, dst, skips in _edges(typed):
        style = ' [style=dashed, color="#d84315", penwidth=1.6]' if skips else ""
        lines.append(f"  {src} -> {dst}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(typed: TypedGraph, title: str) -> str:
    lines = [f"# {title}", "", "```mermaid", "flowchart TD"]
    for name, inp in typed.graph.inputs.items():
        lines.append(f'  {_id(name)}(["{name}<br/>input {fmt_shape(inp.shape)}"])')
    for kind, obj, pad in _walk(typed.graph.root):
        if kind == "open":
            lines.append(f'{pad}subgraph c_{_ID.sub("_", obj.path)}["{obj.path} ({obj.block})"]')
        elif kind == "close":
            lines.append(f"{pad}end")
        else:
            path, op, shape, params = _label(typed, obj)
            extra = f"<br/>{params:,} params" if params else ""
            lines.append(f'{pad}{_id(path)}["{path}<br/>{op} {shape}{extra}"]')
    for name, v in typed.graph.outputs:
        lines.append(f'  out_{_ID.sub("_", name)}(["{name}<br/>output {fmt_shape(typed.shape_of(v))}"])')
    for src, dst, skips in _edges(typed):
        lines.append(f"  {src} {'-.->' if skips else '-->'} {dst}")
    lines += ["```", ""]
    return "\n".join(lines)
