"""Export failures that are the user's to fix (an op a format cannot express, a missing runtime)."""
from __future__ import annotations

from typing import Any


class ExportError(Exception):
    """A format could not be produced; `hint` says what to do, `loc` (a compiler.errors.Loc) is the
    spec node it failed at, when known. The CLI exits 2."""

    def __init__(self, fmt: str, message: str, hint: str = "", loc: Any = None):
        super().__init__(f"{fmt}: {message}")
        self.format, self.message, self.hint, self.loc = fmt, message, hint, loc

    def as_dict(self) -> dict[str, Any]:
        loc = self.loc
        return {"format": self.format, "message": self.message, "hint": self.hint,
                "location": str(loc) if loc is not None else "", "file": getattr(loc, "file", ""),
                "line": getattr(loc, "line", 0), "col": getattr(loc, "col", 0)}


class WriteError(OSError):
    """A file could not be written (disk full, file-size limit, permissions). What was there before
    is intact: every write goes to a temp file that replaces the target only when complete."""

    def __init__(self, path: object, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason


def io_failure(e: BaseException) -> OSError | None:
    """The OSError behind an exporter's exception (they often wrap it), if any."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def raise_if_io(e: BaseException, path: object) -> None:
    io = io_failure(e)
    if io is not None:
        raise WriteError(path, io.strerror or str(io)) from None
