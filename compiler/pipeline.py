"""The pipeline, top to bottom: load -> overrides -> check -> resolve -> shapes -> guard -> lower."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from typing import TYPE_CHECKING

import yaml

from .check import check
from .errors import Loc, SpecError
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
    return check(tree)


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
    typed = infer_shapes(resolve(spec), spec.dims)
    guard_size(typed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed if seed is None else seed)
        module = lower(typed, build_modules(typed, empty))
    module.specc_spec_hash = spec.hash
    return Compiled(spec, typed, module, summarize(spec, typed))
