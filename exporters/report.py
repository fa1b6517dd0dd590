"""parity.json (DESIGN §5 fields and more) and parity.md, a page a reviewer can read."""
from __future__ import annotations

import json
from typing import Any

from .parity import ParityReport


def to_json(report: ParityReport) -> str:
    return json.dumps(report.as_dict(), indent=2, default=str, allow_nan=True) + "\n"


def _sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items()) or "fixed"


def to_markdown(report: ParityReport, title: str) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [f"# Parity: {title}", "", f"**{verdict}** — tolerance |got − ref| ≤ {report.atol:g} + {report.rtol:g}·|ref|,"
             " reference: the eager model in eval mode with the run's weights.", ""]
    if not report.trained:
        lines += ["The run was never trained: these are its initial weights.", ""]
    if report.artifacts:
        lines += ["| format | seconds | file | MB | how | notes |", "|---|---|---|---|---|---|"]
        for a in report.artifacts:
            lines.append(f"| {a['format']} | {a['seconds']:.2f} | {a['path'] or '(in memory)'} | {a['megabytes']:.2f} | "
                         f"{a['method']} | {'; '.join(a['notes'])} |")
        lines.append("")
    lines += ["| format | sizes | max abs err | max rel err | out of tol | worst element (got / ref) | NaN | Inf | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in report.checks:
        w = c.worst
        worst = (f"{w.get('output', '')}{w.get('index', '')}: {w.get('got', 0):.6g} / {w.get('ref', 0):.6g}"
                 if "got" in w else c.error or "-")
        lines.append(f"| {c.format} | {_sizes(c.sizes)} | {c.max_abs_err:.3g} | {c.max_rel_err:.3g} | "
                     f"{c.out_of_tolerance:.2%} | {worst} | {c.nan} | {c.inf} | {'pass' if c.passed else 'FAIL'} |")
    if report.divergence:
        d = report.divergence
        lines += ["", f"First diverging node: **{d['node']}** ({d['op']}) at {d['location']}: {d['how']} "
                  f"(max abs err {d['max_abs_err']:.3g}, format {d['format']})."]
    if report.errors:
        lines += ["", "Formats that could not be produced:", ""]
        lines += [f"- {e['format']}: {e['message']} — {e['hint']}" for e in report.errors]
    if report.latency_ms:
        lines += ["", "Latency (median ms per call):", "", "| runtime | " + " | ".join(_latency_cols(report)) + " |",
                  "|---|" + "---|" * len(_latency_cols(report))]
        for k, v in report.latency_ms.items():
            lines.append(f"| {k} | " + " | ".join(f"{v.get(col, float('nan')):.3f}" for col in _latency_cols(report)) + " |")
    if report.compile_speedup is not None:
        lines += ["", f"torch.compile warm speed: {report.compile_speedup:.2f}× eager."]
    lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in report.environment.items()), ""]
    return "\n".join(lines)


def _latency_cols(report: ParityReport) -> list[str]:
    cols: dict[str, Any] = {}
    for v in report.latency_ms.values():
        cols.update(dict.fromkeys(v))
    return list(cols)
