"""Diagnostics: every user-facing error carries a file, a line, a column and a hint.

This module imports nothing heavy, so the CLI can format errors without importing torch.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class Source:
    """The text of one input (a spec file, or one `--set` override), kept for caret lines."""

    name: str
    text: str

    def line(self, n: int) -> str:
        lines = self.text.splitlines()
        return lines[n - 1] if 0 < n <= len(lines) else ""


@dataclass(frozen=True)
class Loc:
    """A 1-based position in a source. `src` is not part of equality."""

    file: str
    line: int
    col: int
    src: Source | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line > 0 else self.file


NOWHERE = Loc("<spec>", 1, 1)


def file_loc(name: str) -> Loc:
    """A whole file or path (a run folder, a data file), where no line applies."""
    return Loc(str(name), 0, 0)


@dataclass(frozen=True)
class Diagnostic:
    file: str
    line: int
    col: int
    message: str
    hint: str = ""
    snippet: str = ""  # the offending source line, when known

    @classmethod
    def at(cls, loc: Loc | None, message: str, hint: str = "") -> "Diagnostic":
        loc = loc or NOWHERE
        snippet = loc.src.line(loc.line) if loc.src is not None else ""
        return cls(loc.file, loc.line, loc.col, message, hint, snippet)

    def format(self) -> str:
        """`FILE:LINE:COL: error: MESSAGE`, the line with a caret, then `hint:`."""
        where = f"{self.file}:{self.line}:{self.col}" if self.line > 0 else self.file
        out = [f"{where}: error: {self.message}"]
        if self.snippet:
            text = self.snippet.expandtabs(1)
            if len(text) > 200:  # a minified or generated line: show the part around the caret
                start = max(0, self.col - 100)
                text, col = text[start:start + 200], self.col - start
            else:
                col = self.col
            out.append("    " + text)
            out.append("    " + " " * max(col - 1, 0) + "^")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


class SpecError(ValueError):
    """A bad spec, override or input file. `.diagnostics` lists every error of the failing pass."""

    def __init__(self, diagnostics: Iterable[Diagnostic] | Diagnostic):
        diags = [diagnostics] if isinstance(diagnostics, Diagnostic) else list(diagnostics)
        assert diags, "SpecError needs at least one diagnostic"
        self.diagnostics = diags
        super().__init__("\n".join(d.format() for d in diags))

    @classmethod
    def at(cls, loc: Loc | None, message: str, hint: str = "") -> "SpecError":
        return cls(Diagnostic.at(loc, message, hint))


class Collector:
    """Collects the errors of one pass so they can be raised together."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []

    def error(self, loc: Loc | None, message: str, hint: str = "") -> None:
        self.diagnostics.append(Diagnostic.at(loc, message, hint))

    def extend(self, err: SpecError) -> None:
        self.diagnostics.extend(err.diagnostics)

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics)


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's first line (its type's name if it has no message), ANSI escapes removed."""
    import re
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    return (text[0].strip() if text else type(e).__name__)[:limit]


def did_you_mean(word: str, choices: Iterable[str], what: str = "") -> str:
    """A difflib suggestion, or a list of the choices when there are few and none is close."""
    choices = sorted({str(c) for c in choices})
    # a case slip ('Adamw' for 'AdamW') beats a closer spelling of another name ('Adam')
    close = [c for c in choices if c.lower() == str(word).lower()][:1]
    close = close or difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if choices and len(choices) <= 20:
        return f"{'known ' + what + 's' if what else 'choices'}: {', '.join(choices)}"
    return ""
