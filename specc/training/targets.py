"""Where the model's output meets the target: which loss layout fits, found from the typed shapes
before any data is read, so a mismatch is an input error at the output node's YAML line.

    classification  output (batch, classes)          target (batch,)          class indices
                    output (batch, time, vocab)      target (batch, time)     per token
                    output (batch, classes, H, W)    target (batch, H, W)     per pixel
    regression      output (batch, k)                target (batch, k)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compiler.errors import SpecError
from compiler.shapes import TypedGraph, fmt_shape
from compiler.spec import Spec
from compiler.train_section import TrainConfig


@dataclass(frozen=True)
class Layout:
    task: str  # classification | binary | regression
    class_dim: int = -1  # where the class scores are: last (-1) or 1 (per pixel)
    flatten: bool = False  # (..., C) against (...): the loss sees (N, C) against (N,)
    classes: int | None = None  # the output's class count, or the regression target's width
    target: tuple | None = None  # the target's shape, batch first (None: known once the data is read)


def expected_target(cfg: TrainConfig, spec: Spec) -> tuple | None:
    """The target's shape a data source gives, batch first; None where only the file can tell."""
    d, task = cfg.data, cfg.task
    if d.source in ("text", "tokens"):
        inp = next(iter(spec.inputs.values()))
        return ("batch", inp.shape[1] if len(inp.shape) > 1 else d.options["block_size"])
    if d.source == "images":
        return ("batch",)
    if d.source == "synthetic":
        return ("batch", 1) if d.value["name"] == "zigzag" else ("batch",)
    if d.source in ("csv", "inline"):
        return ("batch",) if task == "classification" else ("batch", len(d.target or [None]))
    return None


def _same(a: Any, b: Any) -> bool:
    return a == b or isinstance(a, str) or isinstance(b, str)


def _fits(out: tuple, target: tuple) -> bool:
    return len(out) == len(target) and all(_same(a, b) for a, b in zip(out, target))


def layout(spec: Spec, typed: TypedGraph, cfg: TrainConfig, target: tuple | None = None) -> Layout:
    """The loss layout for this output and target; a `SpecError` at the output node if none fits."""
    name, val = typed.graph.outputs[0]
    out = typed.shape_of(val)
    target = target if target is not None else expected_target(cfg, spec)
    task = cfg.task
    if target is None:
        return Layout(task, classes=out[-1] if out and isinstance(out[-1], int) else None)
    if task in ("regression", "binary"):
        if _fits(out, target):
            return Layout(task, classes=out[-1] if len(out) > 1 and isinstance(out[-1], int) else None, target=target)
        raise _mismatch(spec, typed, out, target, f"{cfg.loss.name} compares them element by element",
                        "make the last layer's out_features match the target's columns")
    if len(out) == len(target) + 1 and _fits(out[:-1], target):
        found = Layout(task, -1, len(target) > 1, out[-1] if isinstance(out[-1], int) else None, target)
        _vocabulary(spec, typed, cfg, found)
        return found
    if len(out) == len(target) + 1 and len(target) > 1 and _fits(out[:1] + out[2:], target):
        return Layout(task, 1, False, out[1] if isinstance(out[1], int) else None, target)
    raise _mismatch(spec, typed, out, target, f"{cfg.loss.name} takes class scores with one more dim than the "
                    "class-index target", "the scores of each sample (or token, or pixel) go in the last dim; "
                    "a classifier may need a flatten before its last Linear")


def _vocabulary(spec: Spec, typed: TypedGraph, cfg: TrainConfig, found: Layout) -> None:
    """Text and token targets are the input's own ids: the output needs a score for every one."""
    if cfg.data.source not in ("text", "tokens") or found.classes is None:
        return
    inp = next(iter(spec.inputs.values()))
    vocab = int(inp.range[1]) if inp.range else 256
    if found.classes < vocab:
        name, loc = _output(spec, typed)
        raise SpecError.at(loc, f"the output '{name}' scores {found.classes} tokens, but the targets are ids of input "
                           f"'{inp.name}', which ranges over {vocab}",
                           f"make the last layer's out_features {vocab} (the vocabulary)")


def check_classes(spec: Spec, typed: TypedGraph, cfg: TrainConfig, found: Layout, classes: list[str]) -> str:
    """An image folder's class subfolders against the output's class scores, before the first step:
    more folders than scores is an error at the output node; fewer, a note (returned) for the console."""
    if not classes or found.classes is None or len(classes) == found.classes:
        return ""
    name, loc = _output(spec, typed)
    shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
    folders = f"{cfg.data.value} has {len(classes)} class folders ({shown})"
    if len(classes) > found.classes:
        raise SpecError.at(loc, f"the output '{name}' scores {found.classes} classes, but {folders}",
                           f"make the last layer's out_features {len(classes)}, or remove the extra class folders "
                           f"(train.data at {cfg.data.source_loc})")
    return f"note: {folders}, but the output '{name}' at {loc} scores {found.classes}: the rest are never a target"


def _mismatch(spec: Spec, typed: TypedGraph, out: tuple, target: tuple, why: str, hint: str) -> SpecError:
    name, loc = _output(spec, typed)
    return SpecError.at(loc, f"the output '{name}' {fmt_shape(out)} cannot meet the target {fmt_shape(target)} in "
                        f"the loss: {why}", hint)


def _output(spec: Spec, typed: TypedGraph) -> tuple[str, Any]:
    """The model's (first) output: its name, and the YAML line of the node (or input) that makes it."""
    name, val = typed.graph.outputs[0]
    node = typed.graph._index.get(val.node)
    return name, node.loc if node is not None else spec.inputs[val.node].loc


def check(spec: Spec, typed: TypedGraph) -> Layout | None:
    """The build-time check (specc build): None for a spec without a train section."""
    return layout(spec, typed, spec.train) if spec.train is not None else None
