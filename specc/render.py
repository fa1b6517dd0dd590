"""Console output with rich: the build summary, the op list, diagnostics."""
from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from compiler.errors import SpecError


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 120)


def summary_table(summary: dict[str, Any]) -> Table:
    """Keras-style: node, op, output shape, parameters; totals in the caption."""
    table = Table(title=f"{summary['name']}", title_justify="left", show_lines=False, header_style="bold")
    table.add_column("node", no_wrap=True)
    table.add_column("op", no_wrap=True)
    table.add_column("output shape", no_wrap=True)
    table.add_column("params", justify="right")
    for row in summary["nodes"]:
        table.add_row(Text(row["name"]), Text(row["op"]), Text(row["shape"]),
                      f"{row['parameters']:,}" if row["parameters"] else "-")
    table.caption = (f"total {summary['parameters']:,} parameters ({summary['trainable_parameters']:,} trainable), "
                     f"{summary['size']}")
    table.caption_justify = "left"
    return table


def op_rows() -> list[dict[str, Any]]:
    """Every op (plugins included) with its arguments, as `specc ops` shows them."""
    from compiler.ops import registry, signature
    rows = []
    for name, op in registry().items():
        args = [{"name": a.name, "type": a.type, "required": a.required, "default": None if a.required else a.default,
                 "inferred": bool(op.infer and op.infer.arg == a.name)} for a in op.args.values()]
        lo, hi = op.inputs
        rows.append({"name": name, "kind": op.kind, "inputs": str(lo) if lo == hi else f"{lo}..{'n' if hi < 0 else hi}",
                     "arguments": signature(op).split("(", 1)[1][:-1], "args": args, "doc": op.doc,
                     "formats": sorted(op.formats), "plugin": op.plugin})
    return rows


def ops_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(header_style="bold", show_lines=False)
    table.add_column("op", no_wrap=True)
    table.add_column("kind")
    table.add_column("in", justify="right")
    table.add_column("arguments")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["inputs"], Text(r["arguments"]))  # Text: '[int, int]' is not markup
    return table


def print_spec_error(err: SpecError) -> None:
    color = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    for d in err.diagnostics:
        text = d.format()
        if color:
            text = text.replace(": error: ", ": \x1b[1;31merror:\x1b[0m ", 1)
        print(text, file=sys.stderr)
    n = len(err.diagnostics)
    if n > 1:
        print(f"{n} errors", file=sys.stderr)


def diff_tables(result: dict[str, Any], show_all: bool) -> list[Any]:
    """Node changes, then checkpoint compatibility, then a one-line verdict."""
    from rich.text import Text
    nodes = Table(title=f"nodes: {result['a']['name']} -> {result['b']['name']}", title_justify="left",
                  header_style="bold")
    for col in ("node", "status", "op", "shape", "params"):
        nodes.add_column(col)
    style = {"changed": "yellow", "added": "green", "removed": "red", "same": "dim"}
    for n in result["nodes"]:
        if n["status"] == "same" and not show_all:
            continue
        x, y = n.get("a") or {}, n.get("b") or {}
        cell = lambda k: Text(f"{x.get(k, '-')} -> {y.get(k, '-')}" if x.get(k) != y.get(k) else str(x.get(k)))  # noqa: E731
        nodes.add_row(Text(n["node"]), Text(n["status"], style=style[n["status"]]), cell("op"), cell("shape"),
                      cell("parameters"))
    tensors = Table(title=f"A's weights ({result['a']['weights']}) loaded into B", title_justify="left",
                    header_style="bold")
    for col in ("tensor", "status", "A shape", "B shape"):
        tensors.add_column(col)
    tstyle = {"loads": "green", "skipped": "yellow", "mismatch": "red", "missing": "yellow"}
    for t in result["tensors"]:
        if t["status"] == "loads" and not show_all:
            continue
        tensors.add_row(Text(t["tensor"]), Text(t["status"], style=tstyle[t["status"]]), Text(str(t.get("a", "-"))),
                        Text(str(t.get("b", "-"))))
    nc, tc, p = result["node_counts"], result["tensor_counts"], result["parameters"]
    verdict = Text(f"nodes: {nc['same']} same, {nc['changed']} changed, {nc['added']} added, {nc['removed']} removed; "
                   f"parameters {p['a']:,} -> {p['b']:,}; tensors: {tc['loads']} load, {tc['skipped']} skipped, "
                   f"{tc['mismatch']} mismatch, {tc['missing']} missing in A")
    return [nodes, tensors, verdict]


def print_report(rep: Any) -> None:
    """The console tables: one row per format and size, then the deployment variants."""
    from exporters import parity
    table = Table(header_style="bold", title="parity", title_justify="left")
    for col in ("format", "sizes", "max abs err", "max rel err", "out of tol", "NaN/Inf", "verdict"):
        table.add_column(col, justify="right" if "err" in col or col == "out of tol" else "left")
    for c in rep.checks:
        if c.kind != "values":
            continue
        table.add_row(c.format, Text(parity.label(c.sizes)), f"{c.max_abs_err:.2e}", f"{c.max_rel_err:.2e}",
                      f"{c.out_of_tolerance:.2%}", f"{c.nan}/{c.inf}", _verdict(c.passed, c.error))
    con = console()
    if any(c.kind == "values" for c in rep.checks):
        con.print(table)
    metric = [c for c in rep.checks if c.kind == "metric"]
    if metric:
        con.print(_variants_table(metric))
    if rep.latency_ms:
        parts = [f"{k} " + ", ".join(f"{s}: {v:.2f} ms" for s, v in d.items()) for k, d in rep.latency_ms.items()]
        con.print(Text("latency: " + " | ".join(parts)))
    if rep.compile_speedup is not None:
        con.print(Text(f"torch.compile: {rep.compile_speedup:.2f}x eager speed (warm)"))
    if rep.divergence:
        d = rep.divergence
        con.print(Text(f"first diverging node: {d['node']} ({d['op']}) at {d['location']}: {d['how']}"))


def _verdict(passed: bool, error: str = "") -> Any:
    from rich.text import Text
    return Text("pass", style="green") if passed else Text("FAIL" + (f" ({error})" if error else ""), style="bold red")


def _variants_table(checks: list[Any]) -> Any:
    from rich.table import Table
    notes = dict.fromkeys(str((c.metric or {}).get("on")) for c in checks)
    table = Table(header_style="bold", title="deployment variants (against fp32)", title_justify="left",
                  caption="metric on the " + "; ".join(notes), caption_justify="left")
    for col in ("format", "metric", "fp32", "variant", "drop", "size", "speed (×fp32)", "verdict"):
        table.add_column(col, justify="left" if col in ("format", "metric", "verdict") else "right")
    for c in checks:
        m, size, speed = c.metric or {}, c.size_mb or {}, (c.latency_ms or {}).get("speed", {})
        slower = any(v < 1 for v in speed.values())
        verdict = _verdict(c.passed)
        if slower:
            verdict.append(", slower", style="yellow")
        table.add_row(c.format, str(m.get("name")), f"{m.get('reference'):.4g}",
                      f"{m.get('quantized'):.4g}", f"{m.get('drop'):.3g} {m.get('unit')}",
                      f"{size.get('variant', 0):.2f} MB (×{size.get('ratio', 0):.2f})",
                      ", ".join(f"{k}: ×{v:.2f}" for k, v in speed.items()), verdict)
    return table
