"""Export failures that are the user's to fix (an op a format cannot express, a missing runtime)."""
from __future__ import annotations


class ExportError(Exception):
    """A format could not be produced; `hint` says what to do. The CLI exits 2."""

    def __init__(self, fmt: str, message: str, hint: str = ""):
        super().__init__(f"{fmt}: {message}")
        self.format, self.message, self.hint = fmt, message, hint
