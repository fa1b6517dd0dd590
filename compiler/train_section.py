"""The `train:` section (DESIGN §3), checked with the rest of the spec into a typed `TrainConfig`.

Every value may be an expression over the spec's params (`lr: $lr`). Loss, optimizer and
scheduler names and their argument names come from the recorded catalog, so this stage needs no
torch. Files are not opened here: a path is made absolute (relative to the spec file) and read by
`specc train`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import catalog
from .errors import Collector, Loc, did_you_mean
from .expr import FAILED, try_evaluate
from .source import Node
from .types import conforms, describe, yaml_name

TRAIN_KEYS = ("data", "loss", "optimizer", "scheduler", "epochs", "batch_size", "seed", "device", "precision",
              "grad_clip", "accumulate", "early_stopping", "checkpoint", "checkpoint_every", "keep_checkpoints",
              "compile", "log_every", "strategy", "activation_checkpointing", "fsdp_units")
STRATEGIES = ("ddp", "fsdp")
SOURCES = ("inline", "csv", "npz", "synthetic", "images", "text", "tokens")
FILE_SOURCES = ("csv", "npz", "images", "text", "tokens")
DATA_KEYS = SOURCES + ("features", "target", "normalize", "val_split", "size", "augment", "block_size", "stride",
                       "dtype", "workers")
NORMALIZE = ("none", "minmax", "standard")
PRECISIONS = ("fp32", "bf16", "fp16")
MONITORS = tuple(p + m for m in ("loss", "accuracy", "mae", "r2") for p in ("", "val_"))
TOKEN_DTYPES = ("uint16", "int32")
# the synthetic sources and their options (specc/synthetic.py implements them; a test keeps the two equal)
SYNTHETIC: dict[str, tuple[str, ...]] = {
    "zigzag": ("samples", "teeth", "noise"),
    "blobs": ("samples", "classes", "dim", "spread"),
    "sequences": ("samples", "classes", "seq", "dim", "noise", "strength"),
    "images": ("samples", "classes", "channels", "size", "noise", "frequency"),
}
CLASSIFICATION = {"CrossEntropyLoss", "NLLLoss", "MultiMarginLoss"}
BINARY = {"BCEWithLogitsLoss", "BCELoss"}


@dataclass(frozen=True)
class Component:
    name: str
    kwargs: dict[str, Any]
    loc: Loc


@dataclass(frozen=True)
class DataConfig:
    source: str  # one of SOURCES
    value: Any  # columns (inline), an absolute path (file sources), or the synthetic options
    features: list[str] | None
    target: list[str] | None
    normalize: str
    val_split: float
    loc: Loc  # the `data:` mapping
    source_loc: Loc  # the source's value (a path's line, for data errors)
    features_loc: Loc | None = None
    target_loc: Loc | None = None
    options: dict[str, Any] = field(default_factory=dict)  # size, augment, block_size, stride, dtype
    workers: int = 0


@dataclass(frozen=True)
class EarlyStopping:
    patience: int
    monitor: str
    mode: str  # min | max
    min_delta: float
    restore_best: bool = True  # the run's weights are the best epoch's, not the last one's


@dataclass(frozen=True)
class Checkpointing:
    every: int = 1  # epochs
    min_interval_s: float = 10.0  # no checkpoint sooner than this after the last (the end always writes one)
    keep: int = 3


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    loss: Component
    optimizer: Component
    scheduler: Component | None
    interval: str  # the scheduler steps per "epoch" or per optimizer "step"
    warmup: int
    epochs: int
    batch_size: int
    seed: int
    device: str
    precision: str
    grad_clip: float | None
    accumulate: int
    early_stopping: EarlyStopping | None
    checkpoint: Checkpointing
    compile: bool
    log_every: int  # steps between reads of the loss on the host
    loc: Loc
    epochs_loc: Loc | None = field(default=None, compare=False)
    strategy: str = "ddp"  # how several processes share the work: replicas (ddp) or shards (fsdp)
    activation_checkpointing: bool = False  # fsdp: recompute each unit's activations in the backward pass
    fsdp_units: tuple[str, ...] | None = None  # module paths sharded as units (default: each repeated block)
    fsdp_units_loc: Loc | None = field(default=None, compare=False)

    @property
    def task(self) -> str:
        return task_of(self.loss.name)


def task_of(loss: str) -> str:
    """classification | binary | regression: which metrics and target dtype a loss implies."""
    return "classification" if loss in CLASSIFICATION else "binary" if loss in BINARY else "regression"


def spec_dir(spec_file: str) -> Path:
    return Path(spec_file).resolve().parent if not spec_file.startswith("<") and spec_file != "--set" else Path.cwd()


class _Reader:
    """Typed values of one mapping, each evaluated in the params' scope; errors go to `c`."""

    def __init__(self, node: Node, params: Mapping[str, Any], c: Collector):
        self.node, self.params, self.c = node, params, c

    def value(self, key: str, default: Any = None) -> Any:
        n = self.node.get(key)
        if n is None:
            return default
        v = try_evaluate(n, self.params, self.c)
        return default if v is FAILED else v

    def loc(self, key: str) -> Loc:
        n = self.node.get(key)
        return n.loc if n is not None else self.node.loc

    def int(self, key: str, low: int, default: int) -> int:
        v = self.value(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            self.c.error(self.loc(key), f"{key} must be an integer ≥ {low}, got {v!r}", f"{key}: {max(low, 1)}")
            return default
        return v

    def number(self, key: str, default: float | None, low: float = 0.0, positive: bool = False) -> float | None:
        v = self.value(key, default)
        if v is None and default is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < low or (positive and v <= 0):
            what = "a positive number" if positive else f"a number ≥ {low:g}"
            self.c.error(self.loc(key), f"{key} must be {what}, got {v!r}", f"{key}: {default or 1.0}")
            return default
        return float(v)

    def bool(self, key: str, default: bool) -> bool:
        v = self.value(key, default)
        if not isinstance(v, bool):
            self.c.error(self.loc(key), f"{key} must be true or false, got {v!r}", f"{key}: {str(default).lower()}")
            return default
        return v

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        v = self.value(key, default)
        if v not in choices:
            self.c.error(self.loc(key), f"unknown {key} {v!r}", did_you_mean(str(v), choices, key) or " | ".join(choices))
            return default
        return v

    def unknown(self, known: tuple[str, ...], what: str) -> set[str]:
        """Report the keys not in `known`; returns the known keys they look like misspellings of."""
        meant = set()
        for k, loc in self.node.key_locs.items():
            if k not in known:
                hint = did_you_mean(k, known, "key")
                self.c.error(loc, f"unknown {what} key '{k}'", hint)
                if hint.startswith("did you mean '"):
                    meant.add(hint.split("'")[1])
        return meant


def check_train(node: Node | None, params: Mapping[str, Any], spec_file: str, c: Collector) -> TrainConfig | None:
    """The typed train section, or None without one (such a spec builds but cannot be trained)."""
    if node is None:
        return None
    if not node.is_map:
        c.error(node.loc, "'train' must be a mapping", "see DESIGN §3")
        return None
    r = _Reader(node, params, c)
    misspelt = r.unknown(TRAIN_KEYS, "train")  # `optimiser:` is reported once, as a typo, not also as missing
    data = _data(node.get("data"), params, spec_file, node.loc, c)
    loss = _component(node.get("loss"), "loss", params, c, node.loc, "loss" in misspelt)
    opt = _component(node.get("optimizer"), "optimizer", params, c, node.loc, "optimizer" in misspelt)
    scheduler, interval, warmup = _scheduler(node.get("scheduler"), params, c, node.loc)
    device = r.value("device", "auto")
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or
                                           (device.startswith("cuda:") and device[5:].isdigit())):
        c.error(r.loc("device"), f"unknown device {device!r}", "auto | cpu | cuda | cuda:N")
        device = "auto"
    clip = r.number("grad_clip", None, positive=True)
    config = dict(epochs=r.int("epochs", 1, 10), batch_size=r.int("batch_size", 1, 32), seed=r.int("seed", 0, 0),
                  device=device, precision=r.choice("precision", PRECISIONS, "fp32"), grad_clip=clip,
                  accumulate=r.int("accumulate", 1, 1), early_stopping=_early(node.get("early_stopping"), params, c),
                  checkpoint=_checkpoint(node, params, c), compile=r.bool("compile", False),
                  log_every=r.int("log_every", 1, 50), strategy=r.choice("strategy", STRATEGIES, "ddp"),
                  activation_checkpointing=r.bool("activation_checkpointing", False),
                  fsdp_units=_units(node.get("fsdp_units"), params, c), fsdp_units_loc=r.loc("fsdp_units"))
    if data is None or loss is None or opt is None:
        return None
    epochs = node.get("epochs")
    return TrainConfig(data, loss, opt, scheduler, interval, warmup, loc=node.loc,
                       epochs_loc=epochs.loc if epochs is not None else None, **config)


def _units(node: Node | None, params: Mapping[str, Any], c: Collector) -> tuple[str, ...] | None:
    """`fsdp_units: [transformer.h, encoder.layer]`: module paths; a repeated node stands for its copies.
    Whether each path exists is checked against the built model when training starts."""
    if node is None:
        return None
    v = try_evaluate(node, params, c)
    if v is FAILED:
        return None
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        c.error(node.loc, "fsdp_units must be a list of module paths", "fsdp_units: [transformer.h]")
        return None
    return tuple(v)


def _checkpoint(node: Node, params: Mapping[str, Any], c: Collector) -> Checkpointing:
    """`checkpoint: {every, min_interval_s, keep}`; the v1 keys checkpoint_every/keep_checkpoints still work."""
    r = _Reader(node, params, c)
    every, keep = r.int("checkpoint_every", 1, 1), r.int("keep_checkpoints", 1, 3)
    cnode = node.get("checkpoint")
    floor = Checkpointing.min_interval_s
    if cnode is None:
        return Checkpointing(every, floor, keep)
    if not cnode.is_map:
        c.error(cnode.loc, "checkpoint must be a mapping", "checkpoint: {every: 1, min_interval_s: 30, keep: 3}")
        return Checkpointing(every, floor, keep)
    cr = _Reader(cnode, params, c)
    cr.unknown(("every", "min_interval_s", "keep"), "checkpoint")
    return Checkpointing(cr.int("every", 1, every), cr.number("min_interval_s", floor), cr.int("keep", 1, keep))


def _component(node: Node | None, what: str, params: Mapping[str, Any], c: Collector,
               parent: Loc, misspelt: bool = False) -> Component | None:
    """`MSELoss`, or `{name: SGD, lr: 0.1}`: a torch class name and its keyword arguments."""
    kind = {"loss": "losses", "optimizer": "optimizers", "scheduler": "schedulers"}[what]
    known = catalog.names(kind)
    if node is None:
        if misspelt:  # already reported at the misspelt key
            return None
        c.error(parent, f"train has no '{what}'", "loss: MSELoss" if what == "loss" else "optimizer: {name: Adam, lr: 0.001}")
        return None
    value = try_evaluate(node, params, c)
    if value is FAILED:
        return None
    if isinstance(value, str):
        name, args = value, {}
    elif isinstance(value, dict) and "name" in value:
        name, args = value["name"], {k: v for k, v in value.items() if k != "name"}
    else:
        c.error(node.loc, f"{what} must be a name or {{name: ..., args}}", f"{what}: {{name: {known[0]}}}")
        return None
    name_loc = node.value["name"].loc if node.is_map else node.loc
    if name not in known:
        hint = did_you_mean(str(name), known, what)
        if isinstance(name, str) and "." in name:
            hint = f"write the class name alone; only torch's own {what}s resolve"
        c.error(name_loc, f"unknown {what} {name!r}", hint or f"any torch {what} class name")
        return None
    types = {a: t for a, t, _ in catalog.load()[kind][name]}
    defaults = {a: d for a, _, d in catalog.load()[kind][name]}
    bad = False
    for k, v in args.items():
        loc = node.key_locs.get(k, node.loc) if node.is_map else node.loc
        if k not in types:
            c.error(loc, f"unknown argument '{k}' for {name}", did_you_mean(k, list(types), "argument"))
        elif types[k] != "null" and not conforms(v, types[k]):  # null: torch's default is None, its type unknown
            at = node.value[k].loc if node.is_map and k in node.value else loc
            c.error(at, f"argument '{k}' of {name} must be {describe(types[k])}, got {yaml_name(v)} {v!r}",
                    f"{k}: {_example(types[k], defaults[k])}")
            bad = True
    return None if bad else Component(name, args, node.loc)


def _example(t: str, default: Any) -> str:
    """A value of the type, for the hint: torch's default where it has one."""
    if default is not None and default != "<required>" and conforms(default, t):
        return json.dumps(default)
    return {"float": "0.001", "int": "10", "bool": "true", "str": "name"}.get(t.split(" |")[0], t)


def _scheduler(node: Node | None, params: Mapping[str, Any], c: Collector,
               parent: Loc) -> tuple[Component | None, str, int]:
    """`{name: StepLR, step_size: 5, warmup: 3, interval: epoch}`; warmup alone is a linear ramp."""
    if node is None or node.value is None:
        return None, "epoch", 0
    interval, warmup = "epoch", 0
    if node.is_map:
        r = _Reader(node, params, c)
        interval = r.choice("interval", ("epoch", "step"), "epoch")
        warmup = r.int("warmup", 0, 0)
        rest = {k: v for k, v in node.value.items() if k not in ("interval", "warmup")}
        node = Node(rest, node.loc, {k: v for k, v in node.key_locs.items() if k in rest})
        if "name" not in rest and warmup:
            if rest:
                c.error(node.loc, "a scheduler with arguments needs a name", "add name: StepLR")
            return None, interval, warmup
    component = _component(node, "scheduler", params, c, parent)
    if component is not None and component.name == "ReduceLROnPlateau" and (interval == "step" or warmup):
        c.error(node.loc, "ReduceLROnPlateau steps on a metric at the end of an epoch: it takes neither "
                "interval: step nor warmup", "drop interval: step and warmup, or use another scheduler")
        return None, interval, warmup
    return component, interval, warmup


def _data(node: Node | None, params: Mapping[str, Any], spec_file: str, parent: Loc,
          c: Collector) -> DataConfig | None:
    if node is None or not node.is_map:
        c.error(node.loc if node is not None else parent, "train needs a 'data:' mapping",
                "data: {synthetic: {name: blobs, samples: 1024}}")
        return None
    r = _Reader(node, params, c)
    r.unknown(DATA_KEYS, "data")
    given = [s for s in SOURCES if s in node.value]
    if len(given) != 1:
        c.error(node.loc, "data needs exactly one source" + (f", got {', '.join(given)}" if given else ""),
                "one of " + ", ".join(s + ":" for s in SOURCES))
        return None
    source = given[0]
    snode = node.value[source]
    value = _source_value(source, snode, params, spec_file, c)
    if value is FAILED:
        return None
    split = r.number("val_split", 0.0) or 0.0
    if not 0 <= split < 1:
        c.error(r.loc("val_split"), f"val_split must be in [0, 1), got {split!r}", "val_split: 0.2")
        split = 0.0
    names = {k: _names(node.get(k), params, c) for k in ("features", "target")}
    locs = {k: node.get(k).loc if node.get(k) is not None else None for k in ("features", "target")}
    return DataConfig(source, value, names["features"], names["target"], r.choice("normalize", NORMALIZE, "none"),
                      float(split), node.loc, snode.loc, locs["features"], locs["target"],
                      _source_options(source, r), r.int("workers", 0, 0))


def _source_value(source: str, snode: Node, params: Mapping[str, Any], spec_file: str, c: Collector) -> Any:
    value = try_evaluate(snode, params, c)
    if value is FAILED:
        return FAILED
    if source in FILE_SOURCES:
        if not isinstance(value, str) or not value:
            c.error(snode.loc, f"{source} must be a path", f"{source}: data/train" + (
                f".{source}" if source in ("csv", "npz") else ""))
            return FAILED
        path = Path(value)
        return path if path.is_absolute() else spec_dir(spec_file) / path
    if source == "inline":
        if not isinstance(value, dict) or not value:
            c.error(snode.loc, "inline data maps column names to lists", "inline: {x: [1, 2], y: [2, 4]}")
            return FAILED
        return value
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or value["name"] not in SYNTHETIC:
        name = value.get("name") if isinstance(value, dict) else value
        name_node = snode.get("name") if snode.is_map else None
        c.error((name_node or snode).loc, f"unknown synthetic source {name!r}", did_you_mean(str(name), SYNTHETIC, "source"))
        return FAILED
    for k in value:
        if k != "name" and k not in SYNTHETIC[value["name"]]:
            c.error(snode.key_locs.get(k, snode.loc), f"synthetic '{value['name']}' has no option '{k}'",
                    did_you_mean(k, SYNTHETIC[value["name"]], "option"))
    return value


_SOURCE_OPTIONS = {"images": ("size", "augment"), "text": ("block_size", "stride"),
                   "tokens": ("block_size", "stride", "dtype")}


def _source_options(source: str, r: _Reader) -> dict[str, Any]:
    """The options of image, text and token sources, each checked; others refuse them."""
    allowed = _SOURCE_OPTIONS.get(source, ())
    for key in ("size", "augment", "block_size", "stride", "dtype"):
        if key in r.node.value and key not in allowed:
            r.c.error(r.node.key_locs[key], f"{key} is not an option of {source} data",
                      f"{source} data takes: {', '.join(allowed)}" if allowed else "drop it")
    out: dict[str, Any] = {}
    if source == "images":
        size = r.value("size")
        if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
            r.c.error(r.loc("size"), f"size must be [height, width], got {size!r}", "size: [64, 64]")
            size = None
        out["size"] = size
        out["augment"] = _augment(r)
    elif source in ("text", "tokens"):
        if "block_size" not in r.node.value:
            r.c.error(r.node.loc, f"{source} data needs block_size", "block_size: 128 (tokens per sample)")
        out["block_size"] = r.int("block_size", 1, 1)
        out["stride"] = r.int("stride", 1, out["block_size"] + 1)  # default: windows of block_size + 1 do not overlap
        if source == "tokens":
            out["dtype"] = r.choice("dtype", TOKEN_DTYPES, "uint16")
    return out


def _augment(r: _Reader) -> dict[str, Any]:
    node = r.node.get("augment")
    if node is None or node.value is None:
        return {}
    if not node.is_map:
        r.c.error(node.loc, "augment must be a mapping", "augment: {flip: true, crop: 4}")
        return {}
    ar = _Reader(node, r.params, r.c)
    ar.unknown(("flip", "crop"), "augment")
    return {"flip": ar.bool("flip", False), "crop": ar.int("crop", 0, 0)}


def _names(node: Node | None, params: Mapping[str, Any], c: Collector) -> list[str] | None:
    if node is None:
        return None
    v = try_evaluate(node, params, c)
    if v is FAILED:
        return None
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        c.error(node.loc, "expected a column name or a list of names", "features: [area, age]")
        return None
    return v


def _early(node: Node | None, params: Mapping[str, Any], c: Collector) -> EarlyStopping | None:
    if node is None or node.value is None:
        return None
    if not node.is_map:
        c.error(node.loc, "early_stopping must be a mapping", "early_stopping: {patience: 5, monitor: val_loss}")
        return None
    r = _Reader(node, params, c)
    r.unknown(("patience", "monitor", "mode", "min_delta", "restore_best"), "early_stopping")
    monitor = r.value("monitor", "val_loss")
    if monitor not in MONITORS:
        c.error(r.loc("monitor"), f"unknown metric {monitor!r} to monitor", did_you_mean(str(monitor), MONITORS))
        monitor = "val_loss"
    default_mode = "max" if any(w in str(monitor) for w in ("accuracy", "r2")) else "min"
    return EarlyStopping(r.int("patience", 1, 5), str(monitor), r.choice("mode", ("min", "max"), default_mode),
                         r.number("min_delta", 0.0) or 0.0, r.bool("restore_best", True))
