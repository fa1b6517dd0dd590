"""Check the `train:` section (DESIGN §3) into a typed `TrainConfig`, collecting every error."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.check import _FAILED, evaluate, try_evaluate
from compiler.errors import Collector, Loc, SpecError, did_you_mean
from compiler.source import Node
from compiler.spec import Spec

from . import components
from .synthetic import GENERATORS

TRAIN_KEYS = ("data", "loss", "optimizer", "scheduler", "epochs", "batch_size", "seed", "device", "precision",
              "grad_clip", "accumulate", "early_stopping", "checkpoint_every", "keep_checkpoints")
DATA_KEYS = ("inline", "csv", "npz", "synthetic", "features", "target", "normalize", "val_split")
SOURCES = ("inline", "csv", "npz", "synthetic")
NORMALIZE = ("none", "minmax", "standard")
PRECISIONS = ("fp32", "bf16", "fp16")
MONITORS = tuple(p + m for m in ("loss", "accuracy", "mae", "r2") for p in ("", "val_"))


@dataclass(frozen=True)
class Component:
    name: str
    kwargs: dict[str, Any]
    loc: Loc


@dataclass(frozen=True)
class DataConfig:
    source: str  # inline | csv | npz | synthetic
    value: Any  # columns, a path, or the synthetic options
    features: list[str] | None
    target: list[str] | None
    normalize: str
    val_split: float
    loc: Loc  # the `data:` mapping
    source_loc: Loc  # the source's value (a path's line, for data errors)
    features_loc: Loc | None = None
    target_loc: Loc | None = None


@dataclass(frozen=True)
class EarlyStopping:
    patience: int
    monitor: str
    mode: str  # min | max
    min_delta: float


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
    checkpoint_every: int
    keep_checkpoints: int
    loc: Loc
    epochs_loc: Loc | None = field(default=None, compare=False)

    @property
    def task(self) -> str:
        return components.task_of(self.loss.name)


def spec_dir(spec: Spec) -> Path:
    f = spec.tree.loc.file
    return Path(f).resolve().parent if not f.startswith("<") and f != "--set" else Path.cwd()


def parse_train(spec: Spec) -> TrainConfig:
    """The typed train section; a spec without one cannot be trained."""
    node = spec.train
    if node is None:
        raise SpecError.at(spec.tree.loc, "the spec has no 'train:' section",
                           "add train: with data, loss, optimizer and epochs (DESIGN §3)")
    c = Collector()
    values: dict[str, Any] = {}
    for k in ("device", "precision", "grad_clip"):
        if node.get(k) is not None:
            v = try_evaluate(node.get(k), spec.params, c)
            if v is not _FAILED:
                values[k] = v
    for k, loc in node.key_locs.items():
        if k not in TRAIN_KEYS:
            c.error(loc, f"unknown train key '{k}'", did_you_mean(k, TRAIN_KEYS, "key"))
    data = _data(node.get("data"), spec, node.loc, c)
    loss = _component(node.get("loss"), "loss", components.losses(), ("size_average", "reduce"), c, node.loc)
    opt = _component(node.get("optimizer"), "optimizer", components.optimizers(), ("params",), c, node.loc)
    interval, warmup, scheduler = "epoch", 0, None
    snode = node.get("scheduler")
    if snode is not None and snode.value is not None:
        if snode.is_map:
            inode, wnode = snode.get("interval"), snode.get("warmup")
            if inode is not None:
                interval = inode.value
                if interval not in ("epoch", "step"):
                    c.error(inode.loc, f"interval must be 'epoch' or 'step', got {interval!r}", "interval: step")
            if wnode is not None:
                warmup = _int(wnode, spec, "warmup", 0, c)
            snode = Node({k: v for k, v in snode.value.items() if k not in ("interval", "warmup")}, snode.loc,
                         {k: v for k, v in snode.key_locs.items() if k not in ("interval", "warmup")})
        if not (snode.is_map and "name" not in snode.value and warmup):
            scheduler = _component(snode, "scheduler", components.schedulers(), ("optimizer",), c, node.loc)
    epochs = _int(node.get("epochs"), spec, "epochs", 1, c, default=10)
    batch = _int(node.get("batch_size"), spec, "batch_size", 1, c, default=32)
    seed = _int(node.get("seed"), spec, "seed", 0, c, default=0)
    accumulate = _int(node.get("accumulate"), spec, "accumulate", 1, c, default=1)
    every = _int(node.get("checkpoint_every"), spec, "checkpoint_every", 1, c, default=1)
    keep = _int(node.get("keep_checkpoints"), spec, "keep_checkpoints", 1, c, default=3)
    device = values.get("device", "auto")
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or
                                           (device.startswith("cuda:") and device[5:].isdigit())):
        c.error(node.get("device").loc, f"unknown device {device!r}", "auto | cpu | cuda | cuda:N")
    precision = values.get("precision", "fp32")
    if precision not in PRECISIONS:
        c.error(node.get("precision").loc, f"unknown precision {precision!r}", did_you_mean(str(precision), PRECISIONS))
    clip = values.get("grad_clip")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip <= 0):
        c.error(node.get("grad_clip").loc, f"grad_clip must be a positive number, got {clip!r}", "grad_clip: 1.0")
    early = _early(node.get("early_stopping"), spec, c)
    c.raise_if_any()
    assert data is not None and loss is not None and opt is not None
    epochs_node = node.get("epochs")
    return TrainConfig(data, loss, opt, scheduler, interval, warmup, epochs, batch, seed, device, precision,
                       None if clip is None else float(clip), accumulate, early, every, keep, node.loc,
                       epochs_node.loc if epochs_node is not None else None)


def _eval(node: Node, spec: Spec) -> Any:
    return evaluate(node, spec.params)


def _int(node: Node | None, spec: Spec, what: str, low: int, c: Collector, default: int = 0) -> int:
    if node is None:
        return default
    v = try_evaluate(node, spec.params, c)
    if v is _FAILED:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        c.error(node.loc, f"{what} must be an integer ≥ {low}, got {v!r}", f"{what}: {max(low, 1)}")
        return default
    return v


def _component(node: Node | None, what: str, known: dict[str, type], skip: tuple[str, ...], c: Collector,
               parent: Loc) -> Component | None:
    """`MSELoss`, or `{name: SGD, lr: 0.1}`: a torch class name and its keyword arguments."""
    if node is None:
        if what in ("loss", "optimizer"):
            c.error(parent, f"train has no '{what}'", "loss: MSELoss" if what == "loss" else "optimizer: {name: Adam, lr: 0.001}")
        return None
    if isinstance(node.value, str):
        name, args, arg_nodes = node.value, {}, {}
    elif node.is_map and "name" in node.value:
        name = node.value["name"].value
        arg_nodes = {k: v for k, v in node.value.items() if k != "name"}
        args = {k: v.plain() for k, v in arg_nodes.items()}
    else:
        c.error(node.loc, f"{what} must be a name or {{name: ..., args}}", f"{what}: {{name: {next(iter(known))}}}")
        return None
    if name not in known:
        loc = node.value["name"].loc if node.is_map else node.loc
        hint = did_you_mean(str(name), known, what)
        if isinstance(name, str) and "." in name:
            hint = f"write the class name alone; only torch's own {what}s resolve"
        c.error(loc, f"unknown {what} {name!r}", hint or f"any torch {what} class name")
        return None
    allowed = components.arg_names(known[name], skip)
    for k, v in arg_nodes.items():
        if k not in allowed:
            c.error(node.key_locs.get(k, v.loc), f"unknown argument '{k}' for {name}", did_you_mean(k, allowed, "argument"))
    return Component(name, args, node.loc)


def _data(node: Node | None, spec: Spec, parent: Loc, c: Collector) -> DataConfig | None:
    if node is None or not node.is_map:
        c.error(node.loc if node is not None else parent, "train needs a 'data:' mapping",
                "data: {synthetic: {name: blobs, samples: 1024}}")
        return None
    for k, loc in node.key_locs.items():
        if k not in DATA_KEYS:
            c.error(loc, f"unknown data key '{k}'", did_you_mean(k, DATA_KEYS, "key"))
    given = [s for s in SOURCES if s in node.value]
    if len(given) != 1:
        c.error(node.loc, "data needs exactly one source" + (f", got {', '.join(given)}" if given else ""),
                "one of inline:, csv:, npz:, synthetic:")
        return None
    source = given[0]
    snode = node.value[source]
    try:
        value = _eval(snode, spec)
    except SpecError as e:
        c.extend(e)
        return None
    if source in ("csv", "npz"):
        if not isinstance(value, str) or not value:
            c.error(snode.loc, f"{source} must be a file path", f"{source}: data/train.{source}")
            return None
        path = Path(value)
        value = path if path.is_absolute() else spec_dir(spec) / path
    elif source == "inline":
        if not isinstance(value, dict) or not value:
            c.error(snode.loc, "inline data maps column names to lists", "inline: {x: [1, 2], y: [2, 4]}")
            return None
    else:
        if not isinstance(value, dict) or value.get("name") not in GENERATORS:
            name = value.get("name") if isinstance(value, dict) else value
            name_node = snode.get("name") if snode.is_map else None
            c.error((name_node or snode).loc, f"unknown synthetic source {name!r}", did_you_mean(str(name), GENERATORS, "source"))
            return None
        options = GENERATORS[value["name"]].options
        for k in value:
            if k != "name" and k not in options:
                kloc = snode.key_locs.get(k, snode.loc)
                c.error(kloc, f"synthetic '{value['name']}' has no option '{k}'", did_you_mean(k, options, "option"))
    features = _names(node.get("features"), spec, c)
    target = _names(node.get("target"), spec, c)
    normalize = node.get("normalize").value if node.get("normalize") is not None else "none"
    if normalize not in NORMALIZE:
        c.error(node.get("normalize").loc, f"unknown normalize {normalize!r}", did_you_mean(str(normalize), NORMALIZE))
    split = 0.0
    if node.get("val_split") is not None:
        split = _eval(node.get("val_split"), spec)
        if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 <= split < 1:
            c.error(node.get("val_split").loc, f"val_split must be in [0, 1), got {split!r}", "val_split: 0.2")
            split = 0.0
    floc, tloc = (node.get(k).loc if node.get(k) is not None else None for k in ("features", "target"))
    return DataConfig(source, value, features, target, normalize, float(split), node.loc, snode.loc, floc, tloc)


def _names(node: Node | None, spec: Spec, c: Collector) -> list[str] | None:
    if node is None:
        return None
    v = _eval(node, spec)
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        c.error(node.loc, "expected a column name or a list of names", "features: [area, age]")
        return None
    return v


def _early(node: Node | None, spec: Spec, c: Collector) -> EarlyStopping | None:
    if node is None or node.value is None:
        return None
    if not node.is_map:
        c.error(node.loc, "early_stopping must be a mapping", "early_stopping: {patience: 5, monitor: val_loss}")
        return None
    for k, loc in node.key_locs.items():
        if k not in ("patience", "monitor", "mode", "min_delta"):
            c.error(loc, f"unknown early_stopping key '{k}'", did_you_mean(k, ("patience", "monitor", "mode", "min_delta")))
    patience = _int(node.get("patience"), spec, "patience", 1, c, default=5)
    monitor = node.get("monitor").value if node.get("monitor") is not None else "val_loss"
    if monitor not in MONITORS:
        c.error(node.get("monitor").loc, f"unknown metric {monitor!r} to monitor", did_you_mean(str(monitor), MONITORS))
    mode = node.get("mode").value if node.get("mode") is not None else (
        "max" if any(w in str(monitor) for w in ("accuracy", "r2")) else "min")
    if mode not in ("min", "max"):
        c.error(node.get("mode").loc, f"mode must be min or max, got {mode!r}", "mode: min")
    delta = node.get("min_delta").value if node.get("min_delta") is not None else 0.0
    return EarlyStopping(patience, str(monitor), mode, float(delta) if isinstance(delta, (int, float)) else 0.0)
