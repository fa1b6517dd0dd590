"""Symbolic dims by sampling: each symbol gets a large prime size (times its `divisible_by`) in two
separate runs, A and B. A size that is equal in both runs is fixed; one that follows a symbol is
written with it (`batch`, `3*batch`, `time+2`, `height/4`, `ceil(height/2)`), and `?` where no
simple form explains it. Messages from torch are rewritten the same way, so a user never sees a
sample size.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from .spec import DimDecl

_PRIMES_A = [10007, 10009, 10037, 10039, 10061, 10067, 10069, 10079, 10091, 10093, 10099, 10103]
_PRIMES_B = [20011, 20021, 20023, 20029, 20047, 20051, 20063, 20071, 20089, 20101, 20107, 20113]
MAX_SYMBOLS = len(_PRIMES_A)
_NUMBER = re.compile(r"\d+")


class Sampler:
    def __init__(self, symbols: list[str], dims: Mapping[str, DimDecl] | None = None, scale: Mapping[str, int] | None = None):
        if len(symbols) > MAX_SYMBOLS:
            raise ValueError("too many symbolic dims")
        dims = dims or {}
        factor = {s: (dims[s].divisible_by if s in dims else 1) * (scale or {}).get(s, 1) for s in symbols}
        self.a = {s: p * factor[s] for s, p in zip(symbols, _PRIMES_A)}
        self.b = {s: p * factor[s] for s, p in zip(symbols, _PRIMES_B)}

    def render(self, x: int, y: int) -> Any:
        """The size in the two runs, as a fixed int or a form of one symbol."""
        if x == y:
            return x
        for s, sa in self.a.items():
            form = _form(s, sa, self.b[s], x, y)
            if form is not None:
                return form
        return "?"

    def unsample(self, text_a: str, text_b: str | None = None) -> str:
        """Torch's message from run A with every size written symbolically. With the same message from
        run B, numbers are paired up and each pair rendered (so `10010` becomes `height+3`)."""
        if text_b is not None:
            na, nb = _NUMBER.findall(text_a), _NUMBER.findall(text_b)
            if len(na) == len(nb) and _NUMBER.sub("#", text_a) == _NUMBER.sub("#", text_b):
                pairs = iter(zip(na, nb))
                return _NUMBER.sub(lambda m: str(self.render(*map(int, next(pairs)))), text_a)
        for name, size in self.a.items():
            text_a = re.sub(rf"\b{size}\b", name, text_a)
        return text_a


def _form(s: str, sa: int, sb: int, x: int, y: int) -> str | None:
    if x % sa == 0 and y % sb == 0 and x // sa == y // sb:
        k = x // sa
        return s if k == 1 else f"{k}*{s}"
    if x - sa == y - sb:
        d = x - sa
        return f"{s}+{d}" if d > 0 else f"{s}-{-d}"
    if x and y and sa % x == 0 and sb % y == 0 and sa // x == sb // y:
        return f"{s}/{sa // x}"
    for k in range(2, 65):
        if x == -(-sa // k) and y == -(-sb // k):
            return f"ceil({s}/{k})"
        if x == sa // k and y == sb // k:
            return f"{s}//{k}"
    return None


_FORMS = [
    (re.compile(r"([A-Za-z_]\w*)"), lambda m: ("", 1)),
    (re.compile(r"(\d+)\*([A-Za-z_]\w*)"), lambda m: ("//", int(m.group(1)))),
    (re.compile(r"([A-Za-z_]\w*)\+(\d+)"), lambda m: ("-", int(m.group(2)))),
    (re.compile(r"([A-Za-z_]\w*)-(\d+)"), lambda m: ("+", int(m.group(2)))),
    (re.compile(r"([A-Za-z_]\w*)/(\d+)"), lambda m: ("*", int(m.group(2)))),
]


def invert(dim: Any, symbol: str) -> tuple[str, int] | None:
    """How to get `symbol` back from a dim of this form: ('', 1) it is the symbol, ('//', 3) its
    size // 3, ('-', 2) its size - 2, ... None if the dim does not carry the symbol exactly."""
    if not isinstance(dim, str):
        return None
    for pattern, how in _FORMS:
        m = pattern.fullmatch(dim)
        if m and symbol in m.groups():
            return how(m)
    return None
