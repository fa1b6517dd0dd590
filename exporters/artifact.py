"""What every exporter returns, and the atomic placement of an artifact on disk."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from compiler.errors import first_line

from .errors import WriteError


def file_mode() -> int:
    """What open() gives a new file under the current umask (mkstemp makes 0600). Read from /proc where
    it can be: setting the umask to read it back is a race with other threads' file creation."""
    try:
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


@dataclass
class Artifact:
    format: str
    path: Path | None  # None for torch.compile, which leaves no file
    seconds: float
    notes: list[str] = field(default_factory=list)
    warnings: str = ""
    method: str = ""  # script | trace, dynamo | legacy, ...
    declared: Any = None  # exporters.declared.DeclaredShapes, for formats whose files declare shapes

    @property
    def megabytes(self) -> float:
        if self.path is None or not self.path.exists():
            return 0.0
        extra = self.path.with_name(self.path.name + ".data")
        return (self.path.stat().st_size + (extra.stat().st_size if extra.exists() else 0)) / 1e6

    def line(self) -> str:
        where = str(self.path) if self.path is not None else "(in memory)"
        return f"{self.format:<12} {self.seconds:6.2f}s  {where}  {self.megabytes:.2f} MB"


def _partial_beside(path: Path, stem: str, tidy: Any) -> Path:
    """`tidy(path)` (leftovers of a killed write), then a new `.{stem}.partial-*` folder beside `path`."""
    try:
        tidy(path)
        return Path(tempfile.mkdtemp(prefix=f".{stem}.partial-", dir=path.parent))
    except OSError as e:
        raise WriteError(path, e.strerror or str(e)) from None


@contextmanager
def staged_folder(path: Path, companions: list[str]) -> Iterator[Path]:
    """A temp folder beside `path`: the block writes `path.name` (and its companion files) in it under
    their final names, and they are moved into place, companions first, only when it succeeds."""
    folder = _partial_beside(path, path.stem, _clear_stale)
    try:
        try:
            yield folder
        except OSError as e:
            raise WriteError(path, e.strerror or str(e)) from None
        try:
            for name in companions + [path.name]:
                with open(folder / name, "rb") as f:
                    os.fsync(f.fileno())
                os.chmod(folder / name, file_mode())
                os.replace(folder / name, path.with_name(name))
        except OSError as e:
            raise WriteError(path, e.strerror or str(e)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A temp path beside `path`, renamed over it only when the block succeeds: a killed or failed
    export never leaves a half-written file under the artifact's name."""
    try:
        _clear_stale(path)
        # the temp name keeps the real suffix last: torch.export.save insists on ".pt2"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.partial-", suffix=path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise WriteError(path, e.strerror or str(e)) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as e:  # the exporter's own write failed: disk full, file-size limit
            raise WriteError(path, e.strerror or str(e)) from None
        except RuntimeError as e:
            if "File too large" in str(e) or "No space left" in str(e):
                raise WriteError(path, first_line(e, 200)) from None
            raise
        try:
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp_path, file_mode())
            os.replace(tmp_path, path)
        except OSError as e:
            raise WriteError(path, e.strerror or str(e)) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def _clear_stale(path: Path) -> None:
    """Make `path`'s folder, and remove what an export that was killed left beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.stem}.partial-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextmanager
def staged_export(final: Path, keep: bool = False) -> Iterator[Path]:
    """An export is all or nothing: the block writes every artifact and report into a temp folder
    beside `final` (a copy of `final`'s files first when `keep`, for --verify), and the folder
    replaces `final` only when the block succeeds. A failure, Ctrl-C or kill leaves `final` as it was
    and the temp folder is removed (or cleared by the next export, after a kill)."""
    stage = _partial_beside(final, final.name, _recover)
    try:
        if keep and final.is_dir():
            for f in final.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    shutil.copy2(f, stage / f.name)
        yield stage
        _swap(stage, final)
    except OSError as e:
        raise WriteError(final, e.strerror or str(e)) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap(stage: Path, final: Path) -> None:
    """`stage` becomes `final` in two renames, with SIGINT and SIGTERM held back between them; a kill
    between them leaves `.NAME.old-*`, which `_recover` puts back."""
    import signal
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        if final.exists():
            os.replace(final, old)
        os.replace(stage, final)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    shutil.rmtree(old, ignore_errors=True)
    try:
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _recover(final: Path) -> None:
    """Clear what a killed export left beside `final`: its temp folders, and a previous export moved
    aside by an interrupted swap (put back if `final` is missing)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in sorted(final.parent.glob(f".{final.name}.old-*")):
        if not final.exists():
            os.replace(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
