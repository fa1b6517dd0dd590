"""Reading training data: csv and npz tables, image folders, text and token files.

Every problem is a `SpecError` naming the data file (and, in the hint, the spec line). Large files
are not copied: npz arrays stored uncompressed and token files are memory-mapped, and images are
decoded per batch. Nothing is unpickled (`allow_pickle=False`).
"""
from __future__ import annotations

import csv
import io
import stat
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import Diagnostic, Loc, SpecError, file_loc, first_line
from compiler.train_section import DataConfig

MAX_TABLE_BYTES = 2 * 2**30  # csv is parsed into memory; npz, images and tokens are not
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def err(cfg: DataConfig, message: str, hint: str = "", where: Loc | None = None) -> SpecError:
    """At the data file (or its line) when `where` is given, with the spec line in the hint; else at
    the spec line. (`specc predict` reads files no spec names: their source_loc is the file itself.)"""
    if where is None:
        return SpecError.at(cfg.source_loc, message, hint)
    if cfg.source_loc.line == 0:
        return SpecError(Diagnostic.at(where, message, hint))
    at = f"train.data at {cfg.source_loc}"
    return SpecError(Diagnostic.at(where, message, f"{hint} ({at})" if hint else at))


def checked_path(cfg: DataConfig, directory: bool = False) -> Path:
    path: Path = cfg.value
    try:
        st = path.stat()
    except FileNotFoundError:
        raise err(cfg, f"data {'folder' if directory else 'file'} {path} does not exist",
                  "paths are relative to the spec file") from None
    except OSError as e:
        raise err(cfg, f"cannot read data file {path}: {e.strerror}", "check the path") from None
    if directory:
        if not stat.S_ISDIR(st.st_mode):
            raise err(cfg, f"{path} is not a folder", "images: names a folder with one subfolder per class")
        return path
    if stat.S_ISDIR(st.st_mode):
        raise err(cfg, f"data file {path} is a directory", f"name a .{cfg.source} file")
    if not stat.S_ISREG(st.st_mode):
        raise err(cfg, f"data file {path} is not a regular file (a FIFO or device?)", f"name a .{cfg.source} file")
    if cfg.source == "csv" and st.st_size > MAX_TABLE_BYTES:
        raise err(cfg, f"data file {path} is {st.st_size / 1e9:.1f} GB; the limit for csv is "
                  f"{MAX_TABLE_BYTES / 1e9:.0f} GB", "convert it to npz, which is memory-mapped")
    return path


# --- tables -----------------------------------------------------------------------------------

def read_csv(cfg: DataConfig) -> dict[str, np.ndarray]:
    return _numbers(cfg, *_csv_rows(cfg))


def read_csv_cells(cfg: DataConfig) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """read_csv's columns, and the same cells as text (as the file wrote them), from one read."""
    path, rows = _csv_rows(cfg)
    numbers = _numbers(cfg, path, rows)
    return numbers, {h.strip(): [r[j].strip() for r in rows[1:] if r] for j, h in enumerate(rows[0])}


def _csv_rows(cfg: DataConfig) -> tuple[Path, list[list[str]]]:
    path = checked_path(cfg)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as e:
        raise err(cfg, f"cannot read {path} as UTF-8 text: {e}", "save it as UTF-8 csv") from None
    rows = list(csv.reader(io.StringIO(text)))
    if len(rows) < 2:
        raise err(cfg, f"{path} has no data rows", "a header row, then one row per sample", where=Loc(str(path), 1, 1))
    return path, rows


def _numbers(cfg: DataConfig, path: Path, rows: list[list[str]]) -> dict[str, np.ndarray]:
    header = [h.strip() for h in rows[0]]
    columns: dict[str, list[float]] = {h: [] for h in header}
    bad: list[Diagnostic] = []  # every bad row and cell, reported together (up to MAX_REPORTED)
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            bad += err(cfg, f"row has {len(row)} fields, the header has {len(header)}", "fix the row",
                       where=Loc(str(path), i, 1)).diagnostics
            continue
        col = 1
        for name, cell in zip(header, row):
            try:
                columns[name].append(float(cell))
            except ValueError:
                bad += err(cfg, f"non-numeric value {cell.strip()!r} in column '{name}'",
                           "specc trains on numbers; encode categories as integers",
                           where=Loc(str(path), i, col)).diagnostics
            col += len(cell) + 1
    raise_many(bad, "value")
    return {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}


def read_npz(cfg: DataConfig) -> dict[str, np.ndarray]:
    """Arrays by name; those stored uncompressed are memory-mapped rather than read."""
    path = checked_path(cfg)
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in z.infolist()}
        with np.load(path, allow_pickle=False) as npz:
            out = {}
            for name in npz.files:
                mapped = _mapped(path, infos.get(name))
                out[name] = mapped if mapped is not None else npz[name]
            return out
    except ValueError as e:
        raise err(cfg, f"{path} holds pickled objects, which specc never loads ({e})",
                  "save plain numeric arrays with np.savez", where=file_loc(str(path))) from None
    except Exception as e:  # zipfile and numpy raise many types for a damaged file
        raise err(cfg, f"{path} is not a readable .npz file: {e}", "write it with numpy.savez",
                  where=file_loc(str(path))) from None


def _mapped(path: Path, info: zipfile.ZipInfo | None) -> np.ndarray | None:
    """An uncompressed .npy member of the zip as a read-only memmap (None if it cannot be mapped)."""
    if info is None or info.compress_type != zipfile.ZIP_STORED or info.file_size < 2**20:
        return None
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:  # 3.0 (unicode field names): read it the ordinary way
            return None
        shape, fortran, dtype = readers[version](f)
        if dtype.hasobject or fortran:
            return None
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


# --- images -------------------------------------------------------------------------------------

@dataclass
class ImageFolder:
    files: list[Path]
    labels: np.ndarray  # class index per file
    classes: list[str]


def image_folder(cfg: DataConfig) -> ImageFolder:
    """`DIR/<class>/<image>`: classes sorted by name, like torchvision's ImageFolder."""
    root = checked_path(cfg, directory=True)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise err(cfg, f"{root} has no class subfolders", "put each class's images in a subfolder: DIR/cat/1.png",
                  where=file_loc(str(root)))
    files, labels, empty = [], [], []
    for k, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        files += found
        labels += [k] * len(found)
        if not found:
            empty.append(name)
    if not files:
        raise err(cfg, f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})", "add image files to the class folders",
                  where=file_loc(str(root)))
    if empty:  # it would be a class no sample has, and an output the model cannot learn
        raise SpecError([Diagnostic.at(file_loc(str(root / name)), "this class folder holds no images "
                                       f"({', '.join(IMAGE_SUFFIXES)})", "add its images, or remove the folder "
                                       f"(train.data at {cfg.source_loc})") for name in empty])
    return ImageFolder(files, np.asarray(labels, dtype=np.int64), classes)


def flat_images(path: Path) -> list[Path]:
    """The images of a folder for `specc predict`: by class subfolders or flat."""
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


MAX_REPORTED = 20  # bad images (and csv cells) named in one error; the rest are counted


def decode(path: Path, size: tuple[int, int], channels: int, where: Any = None) -> np.ndarray:
    """One image as float32 (channels, H, W) in [0, 1], resized with bilinear filtering."""
    return decode_pixels(path, size, channels, where).astype(np.float32) / 255.0


def decode_pixels(path: Path, size: tuple[int, int], channels: int, where: Any = None) -> np.ndarray:
    """One image as uint8 (channels, H, W), resized with bilinear filtering."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im = im.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        loc = file_loc(str(path))
        raise SpecError(Diagnostic.at(loc, f"cannot decode image: {first_line(e, 200)}",
                                      f"remove or replace the file{f' ({where})' if where else ''}")) from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def decode_all(files: list[Path], size: tuple[int, int], channels: int, where: Any = None) -> np.ndarray:
    """Every image as uint8 (N, channels, H, W); the files that cannot be decoded are all named (up
    to MAX_REPORTED, then counted) in one error."""
    out = np.empty((len(files), channels, *size), dtype=np.uint8)
    bad: list[Diagnostic] = []
    for i, f in enumerate(files):
        try:
            out[i] = decode_pixels(f, size, channels, where)
        except SpecError as e:
            bad += e.diagnostics
    raise_many(bad, "image")
    return out


def raise_many(bad: list[Diagnostic], what: str) -> None:
    """One error naming the first MAX_REPORTED problems; the last says how many more there are."""
    if not bad:
        return
    shown = bad[:MAX_REPORTED]
    if len(bad) > len(shown):
        shown[-1] = replace(shown[-1], hint=f"{shown[-1].hint}; {len(bad) - len(shown)} more bad {what}s are "
                            "not listed")
    raise SpecError(shown)


# --- text and tokens --------------------------------------------------------------------------

def token_array(cfg: DataConfig) -> np.ndarray:
    """text: the file's bytes (tokens 0..255); tokens: a flat binary of uint16/int32 ids. Memory-mapped."""
    path = checked_path(cfg)
    dtype = np.dtype(np.uint8 if cfg.source == "text" else cfg.options["dtype"])
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise err(cfg, f"{path} is {size} bytes, not a whole number of {dtype.name} tokens",
                  "check dtype: (uint16 for GPT-2 ids, as nanoGPT's train.bin; int32 for larger vocabularies)",
                  where=file_loc(str(path)))
    if size == 0:
        raise err(cfg, f"{path} is empty", "a language model needs text to read", where=file_loc(str(path)))
    return np.memmap(path, dtype=dtype, mode="r")


def windows(n_tokens: int, block_size: int, stride: int) -> np.ndarray:
    """Start offsets of every window of block_size + 1 tokens, `stride` apart."""
    last = n_tokens - (block_size + 1)
    return np.arange(0, last + 1, stride, dtype=np.int64) if last >= 0 else np.zeros(0, dtype=np.int64)
