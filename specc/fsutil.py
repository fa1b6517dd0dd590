"""Atomic writes: a temp file in the same folder, fsync, then rename over the target."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from exporters.artifact import file_mode
from exporters.errors import WriteError

# what to do about a write that failed, by its errno; WriteError keeps only the OS's reason text
_HINTS = (
    ((errno.EACCES, errno.EPERM), "check the folder's permissions (or write somewhere else)"),
    ((errno.EROFS,), "the file system is read-only: write somewhere else"),
    ((errno.ENOSPC, errno.EDQUOT), "free some disk space"),
    ((errno.EFBIG,), "raise the file-size limit (ulimit -f), or write a smaller file"),
    ((errno.ENOTDIR, errno.EISDIR), "a path in the way is a file where a folder should be, or the reverse"),
)


def write_hint(reason: str) -> str:
    """The hint for a failed write whose OS reason (strerror) is `reason`."""
    for codes, hint in _HINTS:
        if any(reason == os.strerror(c) or reason.startswith(os.strerror(c)) for c in codes):
            return hint
    return "check that the path can be written"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`. On any
    failure (a full disk, a file-size limit) the temp file is removed, `path` keeps its old
    content, and a `WriteError` says why."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write_with(path, write)


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """`atomic_write_bytes` for a writer that streams into a file by name (safetensors' `save_file`):
    `write(tmp)` fills the temp file, which is then fsynced and renamed over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(path, e.strerror or str(e)) from None
    try:
        os.fchmod(fd, file_mode())  # what open() would give; mkstemp makes 0600
        os.close(fd)
        write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise WriteError(path, e.strerror or str(e)) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def fsync(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's entries') writes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """A folder's fsync, where the file system allows one (not every one does for folders)."""
    try:
        fsync(path)
    except OSError:
        pass
