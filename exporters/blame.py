"""Which spec node an exporter's failure belongs to, and what the failure really was.

Exporters wrap the error that matters in several layers ("Failed to convert the exported program
... step 3/3"). The root cause is the innermost exception of the chain. The node comes from the
traceback: a frame translating an exported-program node (whose provenance leads back to ours), or
a frame of the GraphModule's own generated `forward` (its line maps to the fx node).
"""
from __future__ import annotations

from types import TracebackType
from typing import Any, Iterator

import torch.fx as fx

from compiler.errors import first_line


def chain(e: BaseException) -> list[BaseException]:
    """The exception and every one it was raised from, outermost first."""
    out: list[BaseException] = []
    while e is not None and e not in out and len(out) < 32:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def root_cause(e: BaseException, limit: int = 300) -> str:
    """The innermost exception's first line, ANSI escapes removed."""
    return first_line(chain(e)[-1], limit)


def root(node: Any) -> str | None:
    """The name of the node an exported-program node was made from, in the module that was exported."""
    trail = node.meta.get("from_node") or []
    while trail:
        first = trail[0]
        if not getattr(first, "from_node", None):
            return first.name
        trail = first.from_node
    return None


def _frames(e: BaseException) -> Iterator[TracebackType]:
    for exc in chain(e):
        tb = exc.__traceback__
        while tb is not None:
            yield tb
            tb = tb.tb_next


def culprit(e: BaseException, module: fx.GraphModule) -> fx.Node | None:
    """The spec node (an fx node with `specc_path` meta) where the failure happened, if it can be told."""
    nodes = list(module.graph.nodes)
    by_name = {n.name: n for n in nodes}
    code = getattr(module.forward, "__code__", None)
    lineno_map = getattr(module, "_lineno_map", None) or {}
    found = None
    for tb in _frames(e):
        local = tb.tb_frame.f_locals.get("node")
        if isinstance(local, fx.Node):
            found = local if local.graph is module.graph else by_name.get(root(local) or "", found)
        elif code is not None and tb.tb_frame.f_code is code:
            index = lineno_map.get(tb.tb_lineno - code.co_firstlineno)
            if index is not None and index < len(nodes):
                found = nodes[index]
    return found if found is not None and found.meta.get("specc_path") else None


def where(node: fx.Node | None) -> str:
    """` (node 'attn' at spec.yaml:12:5)`, or nothing when the node is unknown."""
    if node is None:
        return ""
    return f" (node '{node.meta['specc_path']}' at {node.meta.get('specc_loc')})"
