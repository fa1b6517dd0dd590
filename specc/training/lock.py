"""One trainer per run: an exclusive `flock` on `RUN/.lock`.

The kernel drops the lock when its holder dies, so a lock left by a killed process is recovered
by the next `specc train` without any clean-up. The lock is re-entrant within a process: a trainer
that holds it may rebuild its own run (which takes it again) but no other process may.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from compiler.errors import SpecError, file_loc


class RunLock:
    _held: dict[str, int] = {}  # resolved lock paths this process holds, and how many times

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fd: int | None = None
        self.nested = False

    def __enter__(self) -> "RunLock":
        key = str(self.path.resolve())
        if RunLock._held.get(key):
            RunLock._held[key] += 1
            self.nested = True
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        RunLock._held[key] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        key = str(self.path.resolve())
        RunLock._held[key] = RunLock._held.get(key, 1) - 1
        if self.nested:
            return
        RunLock._held.pop(key, None)
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
