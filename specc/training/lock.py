"""One trainer per run: an exclusive `flock` on `RUN/.lock`.

The kernel drops the lock when its holder dies, so a lock left by a killed process is recovered
by the next `specc train` without any clean-up.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from compiler.errors import SpecError, file_loc


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            self.fd = None
            raise SpecError.at(file_loc(str(self.path.parent)), f"this run is being trained by pid {holder}",
                               "wait for it to finish, or stop it first") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
