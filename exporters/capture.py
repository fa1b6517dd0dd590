"""Quiet exports: warnings, `[torch.onnx]` progress prints and exporter log lines are captured,
then summarised in one line instead of flooding the terminal."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

_NOISE = ("torchvision is not installed",)


@dataclass
class Captured:
    warnings: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # the exporter's own progress lines
    output: list[str] = field(default_factory=list)

    def summary(self) -> str:
        unique = list(dict.fromkeys(w for w in self.warnings if not any(n in w for n in _NOISE)))
        if not unique:
            return ""
        shown = "; ".join(u[:140] for u in unique[:3])
        more = f" (+{len(unique) - 3} more)" if len(unique) > 3 else ""
        return f"{len(unique)} warning{'s' if len(unique) != 1 else ''}: {shown}{more}"


class _Handler(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append((record.getMessage().splitlines() or [""])[0])


class _Tee(io.StringIO):
    """Collects printed lines and reports `[torch.onnx] ...` steps as they happen."""

    def __init__(self, cap: Captured, on_step: Callable[[str], None] | None):
        super().__init__()
        self.cap, self.on_step, self.buf = cap, on_step, ""

    def write(self, s: str) -> int:
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            m = re.match(r"\[torch\.onnx\]\s*(.*)", line)
            if m:
                self.cap.steps.append(m.group(1))
                if self.on_step is not None:
                    self.on_step(m.group(1))
            elif line.strip():
                self.cap.output.append(line)
        return len(s)


@contextlib.contextmanager
def _fd(fd: int, sink: list[str]) -> Iterator[None]:
    """Native code and torch's log handlers write to the file descriptors: catch those too."""
    (sys.stderr if fd == 2 else sys.__stdout__).flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            (sys.stderr if fd == 2 else sys.__stdout__).flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                line = re.sub(r"^[WEI]\d{4} [\d:.]+ \d+ \S+\] ", "", line).strip()
                if line:
                    sink.append(line)


@contextlib.contextmanager
def capture(on_step: Callable[[str], None] | None = None, stdout_fd: bool = False,
            stdout: bool = True) -> Iterator[Captured]:
    """Warnings, exporter log records and whatever native code writes to stderr are collected in
    the `Captured`; with `stdout`, printed lines too (the `[torch.onnx]` steps go to `on_step`)."""
    cap = Captured()
    handler = _Handler(cap.warnings)
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch._dynamo",
                                              "onnxscript", "onnx_ir", "torch.fx")]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    tee = _Tee(cap, on_step)
    try:
        with contextlib.ExitStack() as stack:
            caught = stack.enter_context(warnings.catch_warnings(record=True))
            if stdout:
                stack.enter_context(contextlib.redirect_stdout(tee))
            stack.enter_context(_fd(2, cap.warnings))
            if stdout_fd:
                stack.enter_context(_fd(1, cap.output))
            warnings.simplefilter("always")
            yield cap
    finally:
        for lg, (prop, level) in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.propagate, lg.level = prop, level
        cap.warnings.extend((str(w.message).splitlines() or [""])[0] for w in caught)
