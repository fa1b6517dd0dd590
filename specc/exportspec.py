"""Check the `export:` section (DESIGN §4) into a typed `ExportConfig`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from compiler.check import evaluate
from compiler.errors import Collector, SpecError, did_you_mean
from compiler.spec import Spec

FORMATS = ("onnx", "torchscript", "pt2", "compile")
EXPORT_KEYS = ("formats", "opset", "dims", "atol", "rtol", "exporter", "seed")
EXPORTERS = ("dynamo", "legacy")
MIN_OPSET, MAX_OPSET = 14, 23


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[str, ...] = FORMATS
    opset: int = 18
    dims: dict[str, list[int]] | None = None
    atol: float = 1e-5
    rtol: float = 1e-4
    exporter: str = "dynamo"
    seed: int = 0

    def override(self, **changes: Any) -> "ExportConfig":
        """Command-line flags over the spec's section, each checked like the section's own values."""
        from compiler.errors import file_loc
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


def parse_export(spec: Spec) -> ExportConfig:
    node = spec.export
    if node is None:
        return ExportConfig()
    c = Collector()
    for k, loc in node.key_locs.items():
        if k not in EXPORT_KEYS:
            c.error(loc, f"unknown export key '{k}'", did_you_mean(k, EXPORT_KEYS, "key"))
    values: dict[str, Any] = {}
    for k, v in node.value.items():
        try:
            values[k] = evaluate(v, spec.params)
        except SpecError as e:
            c.extend(e)
    cfg = ExportConfig()
    formats = values.get("formats", list(FORMATS))
    if not isinstance(formats, list) or not formats or any(f not in FORMATS for f in formats):
        bad = [f for f in formats if f not in FORMATS] if isinstance(formats, list) else [formats]
        c.error(node.get("formats").loc, f"unknown export format {bad[0]!r}" if bad else "formats is empty",
                did_you_mean(str(bad[0]) if bad else "", FORMATS, "format"))
        formats = list(FORMATS)
    opset = values.get("opset", cfg.opset)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        c.error(node.get("opset").loc, f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}",
                "opset: 18")
        opset = cfg.opset
    dims = values.get("dims")
    symbols = spec.symbolic_dims
    if dims is not None:
        ok = isinstance(dims, dict) and all(
            isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
            for v in dims.values())
        if not ok:
            c.error(node.get("dims").loc, "dims maps symbolic dims to lists of positive sizes", "dims: {batch: [1, 3, 32]}")
            dims = None
        else:
            for k in dims:
                if k not in symbols:
                    c.error(node.get("dims").key_locs.get(k, node.loc), f"'{k}' is not a symbolic dim of the inputs",
                            did_you_mean(k, symbols, "dim") or "symbolic dims are the names in input shapes")
    tol = {}
    for k in ("atol", "rtol"):
        v = values.get(k, getattr(cfg, k))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            c.error(node.get(k).loc, f"{k} must be a number ≥ 0, got {v!r}", f"{k}: 1e-5")
            v = getattr(cfg, k)
        tol[k] = float(v)
    exporter = values.get("exporter", cfg.exporter)
    if exporter not in EXPORTERS:
        c.error(node.get("exporter").loc, f"unknown exporter {exporter!r}", did_you_mean(str(exporter), EXPORTERS))
    seed = values.get("seed", 0)
    c.raise_if_any()
    return ExportConfig(tuple(formats), opset, dims, tol["atol"], tol["rtol"], exporter,
                        seed if isinstance(seed, int) else 0)
