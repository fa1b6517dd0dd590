"""The `export:` section (DESIGN §4), checked with the rest of the spec into a typed `ExportConfig`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from .errors import Collector, SpecError, did_you_mean, file_loc
from .expr import FAILED, try_evaluate
from .source import Node

FORMATS = ("onnx", "torchscript", "pt2", "compile")
DEFAULT_FORMATS = ("onnx", "torchscript", "pt2")  # compile with --compile or --all: it is slow and leaves no file
EXPORT_KEYS = ("formats", "opset", "dims", "atol", "rtol", "exporter", "seed")
EXPORTERS = ("dynamo", "legacy")
MIN_OPSET, MAX_OPSET = 14, 23


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[str, ...] = DEFAULT_FORMATS
    opset: int = 18
    dims: dict[str, list[int]] | None = None
    atol: float = 1e-5
    rtol: float = 1e-4
    exporter: str = "dynamo"
    seed: int = 0

    def override(self, **changes: Any) -> "ExportConfig":
        """Command-line flags over the spec's section, each checked like the section's own values."""
        opset, exporter = changes.get("opset"), changes.get("exporter")
        if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
            raise SpecError.at(file_loc("--opset"), f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, "
                               f"got {opset}", "--opset 18")
        for k in ("atol", "rtol"):
            if changes.get(k) is not None and changes[k] < 0:
                raise SpecError.at(file_loc(f"--{k}"), f"{k} must be ≥ 0, got {changes[k]}", f"--{k} 1e-5")
        if exporter is not None and exporter not in EXPORTERS:
            raise SpecError.at(file_loc("--exporter"), f"unknown exporter {exporter!r}", "dynamo or legacy")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def check_export(node: Node | None, params: Mapping[str, Any], symbols: list[str], c: Collector) -> ExportConfig:
    cfg = ExportConfig()
    if node is None:
        return cfg
    if not node.is_map:
        c.error(node.loc, "'export' must be a mapping", "see DESIGN §4")
        return cfg
    for k, loc in node.key_locs.items():
        if k not in EXPORT_KEYS:
            c.error(loc, f"unknown export key '{k}'", did_you_mean(k, EXPORT_KEYS, "key"))
    values: dict[str, Any] = {}
    for k, v in node.value.items():
        got = try_evaluate(v, params, c)
        if got is not FAILED:
            values[k] = got
    loc = lambda k: node.get(k).loc  # noqa: E731
    formats = values.get("formats", list(cfg.formats))
    if not isinstance(formats, list) or not formats or any(f not in FORMATS for f in formats):
        bad = [f for f in formats if f not in FORMATS] if isinstance(formats, list) else [formats]
        c.error(loc("formats"), f"unknown export format {bad[0]!r}" if bad else "formats is empty",
                did_you_mean(str(bad[0]) if bad else "", FORMATS, "format") or f"formats: {', '.join(FORMATS)}")
        formats = list(cfg.formats)
    opset = values.get("opset", cfg.opset)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        c.error(loc("opset"), f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}", "opset: 18")
        opset = cfg.opset
    tol = {}
    for k in ("atol", "rtol"):
        v = values.get(k, getattr(cfg, k))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            c.error(loc(k), f"{k} must be a number ≥ 0, got {v!r}", f"{k}: 1e-5")
            v = getattr(cfg, k)
        tol[k] = float(v)
    exporter = values.get("exporter", cfg.exporter)
    if exporter not in EXPORTERS:
        c.error(loc("exporter"), f"unknown exporter {exporter!r}", did_you_mean(str(exporter), EXPORTERS))
        exporter = cfg.exporter
    seed = values.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        c.error(loc("seed"), f"seed must be an integer ≥ 0, got {seed!r}", "seed: 0")
        seed = 0
    dims = _dims(node.get("dims"), values.get("dims"), symbols, c)
    return ExportConfig(tuple(formats), opset, dims, tol["atol"], tol["rtol"], exporter, seed)


def _dims(node: Node | None, dims: Any, symbols: list[str], c: Collector) -> dict[str, list[int]] | None:
    if node is None or dims is None:
        return None
    ok = isinstance(dims, dict) and all(
        isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
        for v in dims.values())
    if not ok:
        c.error(node.loc, "dims maps symbolic dims to lists of positive sizes", "dims: {batch: [1, 3, 32]}")
        return None
    for k in dims:
        if k not in symbols:
            c.error(node.key_locs.get(k, node.loc), f"'{k}' is not a symbolic dim of the inputs",
                    did_you_mean(k, symbols, "dim") or "symbolic dims are the names in input shapes")
    return dims
