"""The pipeline, top to bottom: load -> overrides -> check -> resolve -> shapes -> guard -> lower."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from typing import TYPE_CHECKING

import yaml

from .check import check_partial
from .errors import Collector, Loc, SpecError
from .overrides import apply_overrides
from .source import Node, load_file, parse_text
from .spec import Spec

if TYPE_CHECKING:  # the front end (read, override, check) stays free of torch
    import torch.fx as fx

    from .shapes import TypedGraph

Overrides = Mapping[str, Any] | Iterable[str] | None


@dataclass
class Compiled:
    spec: Spec
    typed: "TypedGraph"
    module: "fx.GraphModule"
    summary: dict[str, Any]


def read_tree(source: str | os.PathLike | Mapping | Node) -> Node:
    """A path, YAML text or a dict, as a located tree."""
    if isinstance(source, Node):
        return source
    if isinstance(source, Mapping):
        try:
            text = yaml.safe_dump(dict(source), sort_keys=False)
        except yaml.YAMLError as e:
            raise SpecError.at(Loc("<dict>", 1, 1), f"spec dict is not plain data: {e}",
                               "use str, int, float, bool, None, list and dict only") from None
        return parse_text(text, "<dict>")
    if isinstance(source, os.PathLike):
        return load_file(source)
    if isinstance(source, str):
        looks_like_text = "\n" in source or (":" in source and not source.endswith((".yaml", ".yml")))
        if looks_like_text and not _is_file(source):
            return parse_text(source, "<string>")
        return load_file(source)
    raise SpecError.at(Loc("<spec>", 1, 1), f"cannot read a spec from {type(source).__name__}",
                       "pass a path, YAML text or a dict")


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and "\0" not in text and Path(text).is_file()
    except (OSError, ValueError):
        return False


def load(source: Any, params: Overrides = None) -> Spec:
    """Read, override and check a spec.

    >>> spec = load("specs/mlp2.yaml", {"hidden": 32})
    """
    tree = read_tree(source)
    apply_overrides(tree, params)
    spec, c = check_partial(tree)
    if c.diagnostics:
        c.diagnostics += _later_errors(spec, c.diagnostics)
    c.raise_if_any()
    return spec


def _later_errors(spec: Spec, found: list) -> list:
    """With check errors, what `resolve` finds in the nodes that checked well (a wrong argument type
    beside a wrong argument name): every error of the spec in one run. Torch-free: shape() stays
    unanswered here. A partial spec may break an assumption of resolve's; the check's errors are
    the report then, so nothing it raises may hide them."""
    from .errors import Collector
    from .resolve import resolve
    more = Collector()
    try:
        resolve(spec, more, shapes=False)
    except Exception:  # noqa: BLE001 - best effort on a spec already known to be wrong
        return []
    seen = {(d.file, d.line, d.col) for d in found}
    pnode = spec.tree.get("params")
    declared = set(pnode.value) if pnode is not None and pnode.is_map else set()
    failed = {f"unknown param '{p}'" for p in declared - set(spec.params)}  # reported by check already
    return [d for d in more.diagnostics if (d.file, d.line, d.col) not in seen
            and re.sub(r"^(in \w+\(\): )+", "", d.message).removesuffix(" in expression") not in failed]


def compile_spec(spec: Spec, seed: int | None = None, empty: bool = False) -> Compiled:
    """Resolve, infer shapes, guard the size, then build the weights and the fx module.

    The weights are seeded by `seed` (default: the spec's `train.seed`, else 0), and the caller's
    RNG state is left as it was. `empty`: parameters on the meta device, for a weight file to fill.
    """
    import torch

    from .lower import build_modules, lower
    from .resolve import resolve
    from .shapes import guard_size, infer_shapes
    from .summary import summarize
    c = Collector()
    graph = resolve(spec, c)  # resolve's and shape inference's errors, reported together
    typed = infer_shapes(graph, spec.dims, c)
    c.raise_if_any()
    guard_size(typed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed if seed is None else seed)
        module = lower(typed, build_modules(typed, empty))
    module.specc_spec_hash = spec.hash
    return Compiled(spec, typed, module, summarize(spec, typed))
