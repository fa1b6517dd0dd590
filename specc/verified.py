"""Whether an exported artifact may be used: only a file whose parity check passed.

    path = checked_onnx("runs/digits")                         # export/model.onnx, or SpecError (exit 2)
    path = checked_onnx("runs/digits", allow_unchecked=True)   # any file that exists, with a loud warning
    path = checked_onnx("runs/digits", variant="int8")         # export/model.int8.onnx

An export writes each file with `specc.parity: pending` in its ONNX metadata, checks it, then writes
parity.json and records the verdict (`passed` or `failed`) in the file. An export that was killed
part-way leaves files still `pending`, or a parity.json from another export: both must agree that
this file passed before `predict` or `serve` runs it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from compiler.errors import SpecError, file_loc
from exporters import onnx_meta



def checked_onnx(run_dir: str | Path, allow_unchecked: bool = False, variant: str | None = None) -> Path:
    """The run's export/model.onnx (or its `variant`'s file) if its parity passed; else a SpecError
    naming the file and why. With `allow_unchecked`, a file that exists is returned after a warning."""
    run_dir = Path(run_dir)
    name = onnx_meta.VARIANT_FILES.get(variant, "model.onnx") if variant else "model.onnx"
    path = run_dir / "export" / name
    flag = "--onnx" + (f" {_variant_flag(variant)}" if variant else "")
    if not path.is_file():
        raise SpecError.at(file_loc(str(path)), "the run has no ONNX export" if not variant else
                           f"the run has no {variant} variant", f"export it first: specc export {run_dir} {flag}")
    problem = unchecked_reason(path, "onnx" if not variant else f"onnx-{variant}")
    if problem is None:
        return path
    if not allow_unchecked:
        raise SpecError.at(file_loc(str(path)), problem,
                           f"export it again (specc export {run_dir} {flag}), or pass --allow-unchecked to use "
                           "it anyway")
    print(f"warning: {path}: {problem}; using it anyway because of --allow-unchecked", file=sys.stderr, flush=True)
    return path


def unchecked_reason(path: Path, fmt: str) -> str | None:
    """None when the file's metadata and parity.json beside it both say its parity passed; else why not."""
    verdict = _file_verdict(path)
    if verdict != "passed":
        return {"pending": "its parity was never checked (the export that wrote it did not finish)",
                "failed": "its parity check failed",
                None: "it carries no parity verdict (not written by specc export)"}.get(
                    verdict, f"its parity verdict is {verdict!r}")
    report = path.parent / "parity.json"
    try:
        data = json.loads(report.read_text())
    except FileNotFoundError:
        return "its export has no parity.json (the export that wrote it did not finish)"
    except (OSError, ValueError) as e:
        return f"{report} cannot be read ({e})"
    return _report_reason(data, path, fmt)


def _report_reason(data: Any, path: Path, fmt: str) -> str | None:
    if not isinstance(data, dict):
        return "parity.json is not a parity report"
    listed = [a for a in data.get("artifacts") or [] if isinstance(a, dict) and a.get("format") == fmt]
    if not listed or not any(Path(str(a.get("path") or "")).name == path.name for a in listed):
        return "parity.json does not list it (it comes from another export)"
    checks = [c for c in data.get("checks") or [] if isinstance(c, dict) and c.get("format") == fmt]
    if not checks:
        return "parity.json has no check of it"
    if not all(c.get("passed") is True for c in checks):
        return "parity.json says its parity check failed"
    declared = [d for d in data.get("declared_shapes") or [] if isinstance(d, dict) and d.get("format") == fmt]
    if not all(d.get("passed") is True for d in declared):
        return "parity.json says its declared shapes differ from the spec's"
    return None


def _file_verdict(path: Path) -> str | None:
    try:
        meta = onnx_meta.read_file(path)
    except Exception as e:  # a truncated or foreign file: the user's to replace
        raise SpecError.at(file_loc(str(path)), f"not a readable ONNX file: {str(e).splitlines()[0][:200]}",
                           "export it again: specc export RUN --onnx") from None
    return meta.get("parity")


def _variant_flag(variant: str) -> str:
    return {"int8": "--quantize int8", "fp16": "--fp16"}.get(variant, f"--optimize {variant}")
