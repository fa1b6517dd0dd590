"""`specc predict`: a trained run on new data, with the run's own pre- and post-processing.

    tabular      CSV or NPZ with the spec's feature columns -> the features plus the predicted target
                 (regression: denormalized with the run's statistics; classification: class, probability)
    images       a folder (flat or by class)               -> file, class, probability
    text         a text file, one prompt per line           -> prompt, next (the likeliest next byte), probability

`--onnx` runs `export/model.onnx` in onnxruntime instead of the torch model; the rest is the same code.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from compiler.errors import SpecError, file_loc
from compiler.spec import Spec
from compiler.train_section import DataConfig

from . import runs

Runner = Callable[[list[np.ndarray]], np.ndarray]


@dataclass
class Batch:
    inputs: list[np.ndarray]
    rows: list[dict[str, Any]]  # what the output CSV repeats of each sample (features, file, prompt)


@dataclass
class Predictions:
    header: list[str]
    rows: list[list[Any]]

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.header)
        w.writerows([[f"{v:.6g}" if isinstance(v, float) else v for v in r] for r in self.rows])
        return buf.getvalue()


def _stats(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "normalization.json"
    if not path.is_file():
        return {"normalize": "none"}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise SpecError.at(file_loc(str(path)), f"cannot read normalization.json: {e}", "train the run again") from None


def _config(spec: Spec, run_dir: Path) -> DataConfig:
    if spec.train is None:
        raise SpecError.at(file_loc(str(run_dir)), "the run's spec has no train: section, so its data is unknown",
                           "predict works on runs trained by specc train")
    return spec.train.data


def predict(target: Any, data: str | Path, onnx: bool = False, batch_size: int = 256,
            allow_unchecked: bool = False) -> Predictions:
    """Predictions of a run (default: the latest) for the samples in `data`. With `onnx`, the run's
    export/model.onnx must have passed its parity check (`allow_unchecked` uses it anyway, loudly)."""
    run_dir = runs.target_path(target)
    if not runs.is_run(run_dir):
        raise SpecError.at(file_loc(str(run_dir)), "predict needs a run folder", "train one first: specc train SPEC")
    if batch_size < 1:
        raise SpecError.at(file_loc("--batch-size"), f"--batch-size must be at least 1, got {batch_size}", "--batch-size 64")
    spec = runs.load_run(run_dir)
    cfg, stats = _config(spec, run_dir), _stats(run_dir)
    if not runs.is_trained(run_dir):
        raise SpecError.at(file_loc(str(run_dir)), "this run was never trained", "train it first: specc train RUN")
    part_way = runs.stopped_part_way(run_dir)
    if part_way is not None:
        raise SpecError.at(file_loc(str(run_dir)), f"this run was stopped part-way (its last checkpoint is "
                           f"{part_way.name}): its weights are not the trained ones yet",
                           f"finish it first: specc train {run_dir} --resume")
    path = Path(data)
    if not path.exists():
        raise SpecError.at(file_loc(str(path)), "no such file or folder", "pass a csv or npz file, an image folder or a text file")
    runner = _onnx_runner(run_dir, allow_unchecked) if onnx else _torch_runner(run_dir)
    reader = _reader(cfg, spec, stats, path)
    header: list[str] | None = None
    rows: list[list[Any]] = []
    for batch in reader(batch_size):
        out = runner(batch.inputs)
        head, got = decode(cfg, spec, stats, out, batch)
        header = header or head
        rows += got
    return Predictions(header or [], rows)


# --- models -----------------------------------------------------------------------------------

def _torch_runner(run_dir: Path) -> Runner:
    import torch

    from .building import compile_run
    module = compile_run(run_dir).module.train(False)  # inference mode

    def run(xs: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            out = module(*[torch.from_numpy(x) for x in xs])
        out = out[0] if isinstance(out, tuple) else out
        return out.float().numpy()

    return run


def _onnx_runner(run_dir: Path, allow_unchecked: bool) -> Runner:
    from exporters import to_onnx

    from .verified import checked_onnx
    path = checked_onnx(run_dir, allow_unchecked)
    sess = to_onnx.session(path)
    names = [i.name for i in sess.get_inputs()]
    return lambda xs: sess.run(None, dict(zip(names, xs)))[0].astype(np.float32)


# --- inputs -----------------------------------------------------------------------------------

def _reader(cfg: DataConfig, spec: Spec, stats: dict, path: Path) -> Callable[[int], Iterator[Batch]]:
    if cfg.source in ("text", "tokens"):
        return lambda n: _text(cfg, spec, path)
    if cfg.source == "images":
        return lambda n: _images(spec, stats, path, n)
    return lambda n: _table(cfg, spec, stats, path, n)


def _normalized(x: np.ndarray, entry: dict | None) -> np.ndarray:
    if entry is None:
        return x
    return ((x - np.asarray(entry["center"])) / np.asarray(entry["scale"])).astype(np.float32)


def _file_config(cfg: DataConfig, path: Path, source: str) -> DataConfig:
    """A data config for a file that no spec names: its errors point at the file alone."""
    where = file_loc(str(path))
    return DataConfig(source, path, cfg.features, cfg.target, cfg.normalize, 0.0, where, where)


def _table(cfg: DataConfig, spec: Spec, stats: dict, path: Path, n: int) -> Iterator[Batch]:
    """csv: the training features by name; npz: them as 1-D arrays, or arrays named after the inputs (or x)."""
    from .training import sources
    features = stats.get("features") or cfg.features
    if path.suffix.lower() == ".npz":
        xs, show = _npz_inputs(sources.read_npz(_file_config(cfg, path, "npz")), spec, features, path)
    else:
        cols, cells = sources.read_csv_cells(_file_config(cfg, path, "csv"))
        xs, show = column_inputs(cfg, stats, cols, str(path))
        show = {w: cells[w] for w in show}  # the inputs are echoed as the file wrote them, not re-rounded
    _check_inputs(spec, xs, path)
    for s in range(0, len(xs[0]), n):
        yield table_batch(spec, stats, xs, show, slice(s, s + n))


def column_inputs(cfg: DataConfig, stats: dict, cols: dict[str, np.ndarray],
                  where: str) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """A table's columns by name -> the model's input (rows, features) in training order, and the
    columns a prediction repeats."""
    features = stats.get("features") or cfg.features
    targets = stats.get("targets") or cfg.target or []
    wanted = features or [c for c in cols if c not in targets]
    missing = [w for w in wanted if w not in cols]
    if missing:
        raise SpecError.at(file_loc(where), f"column '{missing[0]}' is not in {where}",
                           f"the run was trained on the columns {', '.join(wanted)}")
    return [np.stack([cols[w] for w in wanted], axis=1)], {w: cols[w] for w in wanted}


def table_batch(spec: Spec, stats: dict, xs: list[np.ndarray], show: dict[str, np.ndarray], part: slice) -> Batch:
    """Rows `part` of a table's inputs, normalized with the run's statistics."""
    norms = stats.get("inputs") or [None] * len(xs)
    chunks = []
    for x, inp, norm in zip(xs, spec.inputs.values(), norms):
        chunk = np.asarray(x[part])
        chunks.append(chunk.astype(np.int64) if inp.dtype.startswith("int") else _normalized(chunk.astype(np.float32), norm))
    count = len(xs[0])
    rows = [{k: v[i] if isinstance(v[i], str) else float(v[i]) for k, v in show.items()} for i in range(count)[part]]
    return Batch(chunks, rows)


def _npz_inputs(arrays: dict[str, np.ndarray], spec: Spec, features: list[str] | None,
                path: Path) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    if features and all(f in arrays and arrays[f].ndim == 1 for f in features):  # one array per column
        return [np.stack([arrays[f] for f in features], axis=1)], {f: arrays[f] for f in features}
    inputs = list(spec.inputs)
    wanted = [w for w in (features or []) if w in arrays] or (inputs if all(i in arrays for i in inputs) else ["x"])
    missing = [w for w in wanted if w not in arrays]
    if missing or len(wanted) != len(inputs):
        raise SpecError.at(file_loc(str(path)), f"array '{(missing or wanted)[0]}' is not in {path}" if missing else
                           f"{path} gives {len(wanted)} input(s); the model takes {len(inputs)}",
                           f"name the arrays after the inputs ({', '.join(inputs)}) or x; arrays: {', '.join(arrays)}")
    xs = [arrays[w] for w in wanted]
    return xs, {"row": np.arange(len(xs[0]))}


def _check_inputs(spec: Spec, xs: list[np.ndarray], path: Path) -> None:
    for x, (name, inp) in zip(xs, spec.inputs.items()):
        want = inp.shape[1:]
        if x.ndim != len(inp.shape) or any(isinstance(w, int) and w != g for w, g in zip(want, x.shape[1:])):
            raise SpecError.at(file_loc(str(path)), f"{path} gives input '{name}' samples of shape {tuple(x.shape[1:])}, "
                               f"the model takes ({', '.join(map(str, want))})", f"the input is declared at {inp.loc}")


def _images(spec: Spec, stats: dict, path: Path, n: int) -> Iterator[Batch]:
    from .training import sources
    if path.is_file() and path.suffix.lower() not in sources.IMAGE_SUFFIXES:
        raise SpecError.at(file_loc(str(path)), f"this run classifies images; {path.name} is not an image file",
                           f"pass an image or a folder of images ({', '.join(sources.IMAGE_SUFFIXES)})")
    files = sources.flat_images(path) if path.is_dir() else [path]
    if not files:
        raise SpecError.at(file_loc(str(path)), "no images here", f"image files end in {', '.join(sources.IMAGE_SUFFIXES)}")
    for s in range(0, len(files), n):
        part = files[s:s + n]
        yield image_batch(spec, stats, part, [str(f) for f in part])


def image_batch(spec: Spec, stats: dict, files: list[Any], names: list[str]) -> Batch:
    """Images (paths or file objects) decoded at the run's size and normalized as in training."""
    from .training import sources
    inp = next(iter(spec.inputs.values()))
    size = stats.get("size") or [d for d in inp.shape[2:]]
    x = np.stack([sources.decode(f, tuple(size), inp.shape[1]) for f in files])
    norm = (stats.get("inputs") or [None])[0]
    if norm is not None:
        x = ((x - np.asarray(norm["center"]).reshape(-1, 1, 1)) / np.asarray(norm["scale"]).reshape(-1, 1, 1))
    return Batch([x.astype(np.float32)], [{"file": name} for name in names])


def _text(cfg: DataConfig, spec: Spec, path: Path) -> Iterator[Batch]:
    """One prompt per line (a tokens: run's lines are token ids); each is cut to the model's time
    limit (its last tokens), and the model predicts the token after it."""
    lines = [line for line in path.read_bytes().decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        raise SpecError.at(file_loc(str(path)), "the file has no lines to continue", "write one prompt per line")
    for line in lines:
        yield text_batch(cfg, spec, line, str(path))


def text_batch(cfg: DataConfig, spec: Spec, line: str, where: str) -> Batch:
    """One prompt as the model's input: its tokens, cut to the model's time limit (the last ones)."""
    from .codecs import parse_ids
    inp = next(iter(spec.inputs.values()))
    limit = spec.dims[inp.shape[1]].max if isinstance(inp.shape[1], str) else inp.shape[1]
    tokens = list(line.encode("utf-8")) if cfg.source == "text" else parse_ids(line, where)  # bytes, or ids
    ids = np.asarray(tokens, dtype=np.int64)[-(limit or 10**9):]
    if isinstance(inp.shape[1], int) and len(ids) != inp.shape[1]:
        raise SpecError.at(file_loc(where), f"the model reads exactly {inp.shape[1]} tokens; the line "
                           f"{line[:40]!r} has {len(ids)}", "make the spec's time dim symbolic, or pad the lines")
    return Batch([ids[None]], [{"prompt": line}])


# --- outputs ----------------------------------------------------------------------------------

def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def shown_byte(b: int) -> str:
    """A byte token as text: itself when printable ASCII, else an escape (\\n, \\x0c, \\xe2)."""
    return {10: "\\n", 9: "\\t", 13: "\\r"}.get(b) or (chr(b) if 32 <= b < 127 else f"\\x{b:02x}")


def decode(cfg: DataConfig, spec: Spec, stats: dict, out: np.ndarray, batch: Batch) -> tuple[list[str], list[list]]:
    task = spec.train.task  # type: ignore[union-attr]
    keys = list(batch.rows[0]) if batch.rows else []
    if cfg.source in ("text", "tokens"):
        p = _softmax(out[:, -1].astype(np.float64))
        best = p.argmax(-1)
        show = [shown_byte(int(b)) if cfg.source == "text" else int(b) for b in best]
        return keys + ["next", "probability"], [[r[k] for k in keys] + [s, float(p[i, b])]
                                                for i, (r, s, b) in enumerate(zip(batch.rows, show, best))]
    if task == "classification":
        if out.ndim != 2:  # scores per token or per pixel: one class per row of a CSV would be made up
            raise SpecError.at(file_loc(str(cfg.source_loc.file)), f"this model scores classes per token or pixel "
                               f"(output {tuple(out.shape[1:])} per sample); predict writes one class per sample",
                               "run the exported model (specc export) for dense predictions")
        p = _softmax(out.astype(np.float64))
        best = p.argmax(-1)
        names = stats.get("classes")
        label = [names[b] if names and b < len(names) else int(b) for b in best]
        return keys + ["class", "probability"], [[r[k] for k in keys] + [c, float(p[i, b])]
                                                 for i, (r, c, b) in enumerate(zip(batch.rows, label, best))]
    if task == "binary":
        p = 1 / (1 + np.exp(-out.reshape(len(out), -1).astype(np.float64)))
        names = [f"probability_{t}" for t in (stats.get("targets") or cfg.target or [])]
        names = names if len(names) == p.shape[1] else ["probability"] if p.shape[1] == 1 else \
            [f"probability_{j}" for j in range(p.shape[1])]
        return keys + names, [[r[k] for k in keys] + [float(v) for v in row] for r, row in zip(batch.rows, p)]
    y = out.reshape(len(out), -1).astype(np.float64)
    t = stats.get("target")
    if t is not None:
        y = y * np.asarray(t["scale"]) + np.asarray(t["center"])
    names = stats.get("targets") or cfg.target or []
    names = names if len(names) == y.shape[1] else [f"y{j}" for j in range(y.shape[1])]
    return keys + names, [[r[k] for k in keys] + [float(v) for v in row] for r, row in zip(batch.rows, y)]


def processing(run_dir: Path) -> tuple[DataConfig, Spec, dict]:
    """A run's data config, spec and training statistics: what its pre- and post-processing read."""
    spec = runs.load_run(run_dir)
    return _config(spec, run_dir), spec, _stats(run_dir)
