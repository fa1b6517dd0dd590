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
