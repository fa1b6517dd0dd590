"""The search space of `specc sweep`: `--search PATH=DIST`, each checked before any trial runs.

    --search train.optimizer.lr=loguniform(1e-4,1e-1)   --search hidden=int(16,128)
    --search dropout=uniform(0,0.5)                     --search train.optimizer.name=choice(Adam,SGD)

PATH is a param or a dotted spec path, as for `--set`; every bound and choice is tried on the spec
(as `--set PATH=VALUE`), so an unknown path or a value the spec refuses is an error before the
sweep, naming `--search`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from compiler.errors import SpecError, file_loc

KINDS = ("loguniform", "uniform", "int", "choice")
_ITEM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*=\s*([a-z]+)\s*\((.*)\)\s*$", re.S)
FORMS = "PATH=loguniform(a,b) | uniform(a,b) | int(a,b) | choice(x,y,...)"


@dataclass(frozen=True)
class Dim:
    """One searched path and its distribution."""

    path: str
    kind: str  # one of KINDS
    low: Any = None
    high: Any = None
    choices: tuple = ()
    text: str = ""  # as given

    def override(self, value: Any) -> str:
        """The `--set` string that gives `value` to the path."""
        return f"{self.path}={json.dumps(value)}"

    def samples(self) -> list[Any]:
        """The values tried on the spec before the sweep: the bounds, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def _error(item: str, message: str, hint: str = FORMS) -> SpecError:
    return SpecError.at(file_loc("--search"), f"{message} in {item!r}", hint)


def _args(text: str) -> list[Any]:
    """`1e-4, 0.1` or `Adam, [1, 2]`: comma-separated YAML scalars or flow lists, split at depth 0."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if any(not p.strip() for p in parts):
        raise ValueError("an empty argument")
    return [_scalar(p.strip()) for p in parts]


def _scalar(text: str) -> Any:
    """A number as Python reads it (YAML 1.1 takes 1e-4 for a string), else a YAML value."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _number(v: Any, integer: bool = False) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)


def parse_one(item: str) -> Dim:
    m = _ITEM.match(item)
    if m is None:
        raise _error(item, "cannot read the search")
    path, kind, inner = m.groups()
    if kind not in KINDS:
        raise _error(item, f"unknown distribution '{kind}'")
    try:
        args = _args(inner)
    except (ValueError, yaml.YAMLError):
        raise _error(item, "cannot read the arguments") from None
    if kind == "choice":
        if len(args) < 1:
            raise _error(item, "choice needs at least one value", "choice(16,32,64)")
        return Dim(path, kind, choices=tuple(args), text=item)
    integer = kind == "int"
    if len(args) != 2 or not all(_number(a, integer) for a in args):
        raise _error(item, f"{kind} takes two {'integers' if integer else 'numbers'}", f"{path}={kind}(1,10)")
    low, high = args
    if (low > high) if integer else (low >= high):
        raise _error(item, f"the range {low}..{high} is empty", f"{path}={kind}({high},{low})" if low > high else
                     "give a range with low < high")
    if kind == "loguniform" and low <= 0:
        raise _error(item, "loguniform needs bounds above 0", f"{path}=loguniform(1e-5,{high})")
    return Dim(path, kind, low, high, text=item)


def parse(items: list[str]) -> list[Dim]:
    if not items:
        raise SpecError.at(file_loc("--search"), "a sweep needs at least one --search", "--search lr=loguniform(1e-4,1e-1)")
    dims = [parse_one(i) for i in items]
    seen: set[str] = set()
    for d in dims:
        if d.path in seen:
            raise _error(d.text, f"{d.path} is searched twice", "give each path one --search")
        seen.add(d.path)
    return dims


def check(spec: str, sets: list[str], dims: list[Dim]) -> None:
    """Each bound and choice, set on the spec as --set would: an unknown path or a value the spec
    refuses is a --search error now, not a failed trial later."""
    from ..runs import load
    for d in dims:
        for value in d.samples():
            try:
                load(spec, [*sets, d.override(value)])
            except SpecError as e:
                first = e.diagnostics[0]
                raise SpecError.at(file_loc("--search"), f"{d.text}: with {d.path}={json.dumps(value)} the spec "
                                   f"fails: {first.message}", first.hint or "check the path against the spec") from None
