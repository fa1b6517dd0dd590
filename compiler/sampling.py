"""Symbolic dims by sampling: each symbol gets a large prime size (times its `divisible_by`) in two
separate runs, A and B. A size that is equal in both runs is fixed; one that follows a symbol is
written with it (`batch`, `3*batch`, `time+2`, `height/4`, `ceil(height/2)`, `4*(height//4)`), and
`?` where no simple form explains it. The primes of A, B (and C, a third run that only failures
use) differ modulo 128, so a rounding such as `4*(height//4)` cannot pass for `height-1`. Messages from torch are rewritten the same way, so a user never sees a
sample size.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from .spec import DimDecl

_PRIMES_A = [10369, 10753, 11393, 11777, 12161, 12289, 13313, 13441, 13697, 14081, 14593, 15233]  # 1 mod 128
# B's sizes fall where A's rise, so no two symbols keep the same difference or ratio in both runs
_PRIMES_B = [26879, 26111, 25471, 25343, 25087, 23167, 23039, 22783, 22271, 21503, 21247, 20479]  # 127 mod 128
_PRIMES_C = [30271, 30911, 31039, 32063, 32191, 32831, 33343, 33599, 34367, 36671, 37567, 37951]  # 63 mod 128
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
        self.c = {s: p * factor[s] for s, p in zip(symbols, _PRIMES_C)}

    def shifted(self) -> "Sampler":
        """The same dims sampled with B's and C's primes (for a failure only one run showed)."""
        other = Sampler.__new__(Sampler)
        other.a, other.b, other.c = self.b, self.c, self.a
        return other

    def render(self, x: int, y: int, runs: tuple[dict, dict] | None = None) -> Any:
        """A size in two runs (A and B unless `runs` says which), as a fixed int or a form of one symbol."""
        first, second = runs or (self.a, self.b)
        if x == y:
            return x
        for s, sa in first.items():  # the symbol itself first
            if (x, y) == (sa, second[s]):
                return s
        for s, sa in first.items():
            form = _form(s, sa, second[s], x, y)
            if form is not None:
                return form
        return "?"

    def unsample(self, text_1: str, text_2: str | None = None, runs: tuple[dict, dict] | None = None) -> str:
        """Torch's message from one run with every size written symbolically. Given the same message
        from a second run, numbers are paired up and each pair rendered (`10010` becomes `height+3`);
        otherwise only sizes that a simple form of one sample explains are rewritten."""
        runs = runs or (self.a, self.b)
        if text_2 is not None:
            n1, n2 = _NUMBER.findall(text_1), _NUMBER.findall(text_2)
            if len(n1) == len(n2) and _NUMBER.sub("#", text_1) == _NUMBER.sub("#", text_2):
                pairs = iter(zip(n1, n2))
                return _NUMBER.sub(lambda m: str(self.render(*map(int, next(pairs)), runs)), text_1)
        return _NUMBER.sub(lambda m: _single(int(m.group()), runs[0]) or m.group(), text_1)


def _single(n: int, sample: dict[str, int]) -> str | None:
    """A size of one run written with a symbol, where a simple form explains it (else None)."""
    for s, v in sample.items():
        if n % v == 0 and n // v <= 64:
            return s if n == v else f"{n // v}*{s}"
        if abs(n - v) <= 64:
            return f"{s}+{n - v}" if n > v else f"{s}-{v - n}"
        for k in range(2, 65):
            if n == v // k:
                return f"{s}//{k}"
            if n == -(-v // k):
                return f"ceil({s}/{k})"
            if n == k * (v // k):
                return f"{k}*({s}//{k})"
    return None


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
        if x == k * (sa // k) and y == k * (sb // k):
            return f"{k}*({s}//{k})"
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
