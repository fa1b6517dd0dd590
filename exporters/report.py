"""parity.json (DESIGN §5 fields and more) and parity.md, a page a reviewer can read."""
from __future__ import annotations

import json
from typing import Any

from .parity import Check, ParityReport, label
from .variants import speed_verdict


def to_json(report: ParityReport) -> str:
    return json.dumps(report.as_dict(), indent=2, default=str, allow_nan=True) + "\n"


def to_markdown(report: ParityReport, title: str) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [f"# Parity: {title}", "", f"**{verdict}** — tolerance |got − ref| ≤ {report.atol:g} + {report.rtol:g}·|ref|,"
             " reference: the eager model in eval mode with the run's weights.", ""]
    if not report.trained:
        lines += ["The run was never trained: these are its initial weights.", ""]
    lines += _artifacts(report) + _values(report) + _declared(report) + _variants(report)
    if report.divergence:
        d = report.divergence
        lines += ["", f"First diverging node: **{d['node']}** ({d['op']}) at {d['location']}: {d['how']} "
                  f"(max abs err {d['max_abs_err']:.3g}, format {d['format']})."]
    if report.errors:
        lines += ["", "Formats that could not be produced:", ""]
        lines += [f"- {e['format']}: {e['message']}" + (f" at {e['location']}" if e.get("location") else "")
                  + f" — {e['hint']}" for e in report.errors]
    if report.notes:
        lines += [""] + [f"- {n}" for n in report.notes]
    lines += _latency(report)
    if report.compile_speedup is not None:
        lines += ["", f"torch.compile warm speed: {report.compile_speedup:.2f}× eager."]
    if report.warnings:
        lines += ["", "Warnings from torch, onnxscript and onnxruntime (kept off the console):", ""]
        lines += [f"- {fmt}: {text}" for fmt, text in report.warnings.items()]
    lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in report.environment.items()), ""]
    return "\n".join(lines)


def _artifacts(report: ParityReport) -> list[str]:
    if not report.artifacts:
        return []
    lines = ["| format | seconds | file | MB | how | notes |", "|---|---|---|---|---|---|"]
    for a in report.artifacts:
        lines.append(f"| {a['format']} | {a['seconds']:.2f} | {a['path'] or '(in memory)'} | {a['megabytes']:.2f} | "
                     f"{a['method']} | {'; '.join(a['notes'])} |")
    return lines + [""]


def _values(report: ParityReport) -> list[str]:
    lines = ["| format | sizes | max abs err | max rel err | out of tol | worst element (got / ref) | NaN | Inf | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in report.checks:
        if c.kind != "values":
            continue
        w = c.worst
        worst = (f"{w.get('output', '')}{w.get('index', '')}: {w.get('got', 0):.6g} / {w.get('ref', 0):.6g}"
                 if "got" in w else c.error or "-")
        lines.append(f"| {c.format} | {label(c.sizes)} | {c.max_abs_err:.3g} | {c.max_rel_err:.3g} | "
                     f"{c.out_of_tolerance:.2%} | {worst} | {c.nan} | {c.inf} | {'pass' if c.passed else 'FAIL'} |")
    return lines


def _dims(dims: list[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _declared(report: ParityReport) -> list[str]:
    if not report.declared_shapes:
        return []
    lines = ["", "Declared shapes (every symbolic dim of the spec symbolic in the file, under its name):", "",
             "| format | value | spec | declared | | verdict |", "|---|---|---|---|---|---|"]
    for d in report.declared_shapes:
        for v in d["values"]:
            how = "repaired" if v["repaired"] else "renamed" if v["renamed"] else ""
            lines.append(f"| {d['format']} | {v['kind']} {v['name']} | {_dims(v['expected'])} | {_dims(v['declared'])} "
                         f"| {how} | {'pass' if v['passed'] else 'FAIL: ' + v['problem']} |")
    lines += ["", "Verified by: " + "; ".join(f"{d['format']}: {d['verified_by']}" for d in report.declared_shapes)]
    return lines


def _variants(report: ParityReport) -> list[str]:
    checks: list[Check] = [c for c in report.checks if c.kind == "metric"]
    if not checks:
        return []
    lines = ["", "Deployment variants, against the fp32 ONNX file (element-wise tolerance does not apply):", "",
             "| format | metric | on | fp32 | variant | drop | allowed | size MB (×fp32) | speed (×fp32) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        m, size = c.metric or {}, c.size_mb or {}
        lat = ", ".join(f"{k}: ×{v:.2f}" for k, v in (c.latency_ms or {}).get("speed", {}).items())
        lines.append(f"| {c.format} | {m.get('name')} | {m.get('on')} | {m.get('reference'):.6g} | "
                     f"{m.get('quantized'):.6g} | {m.get('drop'):.3g} {m.get('unit')} | {m.get('max_drop'):g} "
                     f"{m.get('unit')} | {size.get('variant', 0):.3f} ({size.get('ratio', 0):.2f}×) | {lat} | "
                     f"{'pass' if c.passed else 'FAIL'} |")
    lines += [""] + [f"- {c.format}: {c.note}" for c in checks if c.note]
    lines += [f"- **{speed_verdict(c)}**" for c in checks if speed_verdict(c)]
    lines += ["", "Speed is fp32's time per call over the variant's: ×2 runs twice as fast, ×0.5 at half the speed."]
    return lines


def _latency(report: ParityReport) -> list[str]:
    if not report.latency_ms:
        return []
    cols: dict[str, Any] = {}
    for v in report.latency_ms.values():
        cols.update(dict.fromkeys(v))
    lines = ["", "Latency (median ms per call, every dim at its smallest and at its largest size):", "",
             "| runtime | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k, v in report.latency_ms.items():
        lines.append(f"| {k} | " + " | ".join(f"{v.get(col, float('nan')):.3f}" for col in cols) + " |")
    return lines
