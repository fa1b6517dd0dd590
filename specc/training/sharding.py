"""FSDP2 (`torch.distributed.fsdp.fully_shard`): a run's weights, gradients and optimizer state
sharded across the ranks, for `train.strategy: fsdp` or `specc train RUN --nproc N --strategy fsdp`.

- **Units.** Each repeated block copy (`transformer.h.0`, `transformer.h.1`, ...) is one unit by
  default, or the modules `train.fsdp_units` lists; the root holds the rest. A unit's weights are
  gathered just before it runs and freed after, so a rank holds its 1/N shard plus one unit.
- **The graph.** A compiled spec is one flat fx graph whose block modules are only containers, so a
  unit's nodes are first moved into a graph of their own on that container (`regroup`): its
  forward then runs as one call, which FSDP's and activation checkpointing's hooks need. The
  parameters and their names stay exactly as they were.
- **Checkpoints** are DCP folders (`checkpoints/epoch-000005.dcp/`): each rank writes its shards,
  rank 0 the small state (`extra.safetensors`: epoch, scheduler, per-rank RNG states, ...), all
  into a hidden folder renamed into place once complete. DCP reshards on load, so a run resumes on
  any number of processes; on the same number it resumes bit-exact.
- **At the end** the shards are gathered into an ordinary `model.safetensors` with the keys and
  shapes of a build.
"""
from __future__ import annotations

import contextlib
import operator
import os
import shutil
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import fx

from compiler.errors import SpecError, did_you_mean, file_loc, first_line
from compiler.train_section import TrainConfig

from .. import weights
from ..fsutil import atomic_write_bytes, fsync
from . import checkpoint

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Sharder:
    """How one rank shards its model, and writes and reads the sharded checkpoints."""

    units: list[str]
    checkpointing: bool
    precision: str
    world: int
    rank: int = 0

    @staticmethod
    def of(compiled: Any, cfg: TrainConfig, world: int) -> "Sharder":
        rank = dist.get_rank() if world > 1 else 0
        return Sharder(unit_paths(compiled, cfg), cfg.activation_checkpointing, cfg.precision, world, rank)

    def shard(self, module: fx.GraphModule) -> nn.Module:
        """Regroup the units, checkpoint their activations if asked, and shard them, then the root.
        One process shards nothing (there is nothing to split with), but checkpoints as DCP still."""
        for unit in self.units:
            regroup(module, unit)
        module.recompile()
        if self.checkpointing:
            from torch.distributed._composable import checkpoint as recompute
            for unit in self.units:
                recompute(module.get_submodule(unit))
        if self.world == 1:
            return module
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        dtype = _DTYPES.get(self.precision)
        # gradients are reduced in fp32 whatever the compute dtype: a bf16 sum over ranks loses bits
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
        for unit in self.units:
            fully_shard(module.get_submodule(unit), mp_policy=mp)
        fully_shard(module, mp_policy=mp)
        return module

    def wrap(self, module: nn.Module) -> nn.Module:
        return _Synced(module) if self.world > 1 else module

    def save(self, loop: Any, meter: Any) -> Path:
        """Write the loop's state as a DCP folder, atomically: every rank calls this."""
        w, p = loop.where, loop.parts
        final = checkpoint.path_for(w.checkpoints, loop.pos.epoch, loop.pos.batches).with_suffix(".dcp")
        tmp = final.parent / f".{final.name}.partial"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self._barrier()
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict
        model_sd, optim_sd = get_state_dict(p.module, p.optimizer)
        with _one_process_is_meant():
            dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(tmp))
        state = {k: v for k, v in loop.state(meter).items() if k not in ("model", "optimizer")}
        state["rng_ranks"] = self._rng_states()
        if self.rank == 0:
            atomic_write_bytes(tmp / checkpoint.EXTRA, checkpoint.to_bytes(state, w.model_hash))
            _publish(tmp, final)
            checkpoint.prune(w.checkpoints, w.cfg.checkpoint.keep)
            for stale in w.checkpoints.glob(".epoch-*.dcp.partial"):  # left by a process killed mid-write
                shutil.rmtree(stale, ignore_errors=True)
        self._barrier()
        return final

    def _rng_states(self) -> list[torch.Tensor]:
        """Every rank's CPU generator state (each rank draws its own dropout masks)."""
        mine = torch.get_rng_state()
        if self.world == 1:
            return [mine]
        states = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(states, mine)
        return states

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


class _Synced(nn.Module):
    """The sharded root with DDP's `no_sync()`, so gradient accumulation skips the reduce-scatter."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *xs: Any) -> Any:
        return self.module(*xs)

    @contextlib.contextmanager
    def no_sync(self) -> Any:
        self.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)


@contextlib.contextmanager
def _one_process_is_meant() -> Any:
    """DCP warns that it assumes one process when no group is set up: here that is the intent."""
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _publish(tmp: Path, final: Path) -> None:
    """Make a complete checkpoint folder visible under its name: its files and the folder synced first."""
    for f in tmp.iterdir():
        fsync(f)
    if final.exists():  # the same epoch written again after a resume
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync(final.parent)


def restore(parts: Any, state: dict[str, Any], rank: int) -> None:
    """Load a checkpoint's weights and optimizer into `parts`, sharded or not. From a DCP folder DCP
    reshards for this world size; a whole (one-file) checkpoint is scattered from its full tensors.
    This rank's own RNG state replaces rank 0's, where the checkpoint has one for it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
    if "sharded" in state:
        import torch.distributed.checkpoint as dcp
        model_sd, optim_sd = get_state_dict(parts.module, parts.optimizer)  # creates the optimizer's moments
        try:
            with _one_process_is_meant():
                dcp.load({"model": model_sd, "optimizer": optim_sd}, storage_reader=_reader(state["sharded"]))
        except (dcp.api.CheckpointException, OSError, RuntimeError, ValueError) as e:
            raise SpecError.at(file_loc(state["sharded"]), f"not a readable sharded checkpoint: {first_line(e, 200)}",
                               "the folder is damaged or was not written by specc; delete it to resume from "
                               "the one before") from None
        set_state_dict(parts.module, parts.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
        ranks = state.get("rng_ranks") or []
        if ranks:  # on another world size the ranks beyond the saved ones reuse theirs, modulo
            state["rng"]["cpu"] = ranks[rank % len(ranks)]
        return
    names = [n for n, _ in parts.module.named_parameters()]  # the optimizer's order: module.parameters()
    optim = state["optimizer"]
    by_name = {"state": {names[int(i)]: s for i, s in optim["state"].items()},
               "param_groups": [dict(g, params=[names[int(i)] for i in g["params"]]) for g in optim["param_groups"]]}
    set_state_dict(parts.module, parts.optimizer, model_state_dict=state["model"], optim_state_dict=by_name,
                   options=StateDictOptions(full_state_dict=True))


def _reader(folder: str) -> Any:
    """DCP's reader, but its `.metadata` (a pickle) is read with a restricted unpickler: DCP's own
    metadata classes, torch sizes, dtypes and paths, nothing that runs code (tensors it reads
    with torch.load(weights_only=True) already)."""
    import pickle

    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            obj = super().find_class(module, name)
            allowed = (module.startswith("torch.distributed.checkpoint") and isinstance(obj, type)) or \
                (module == "torch.serialization" and name == "_get_layout") or \
                (module == "torch" and (obj is torch.Size or isinstance(obj, torch.dtype))) or \
                (module == "pathlib" and name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")) or \
                (module == "collections" and name == "OrderedDict")
            if not allowed:
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint's metadata")
            return obj

    class Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            rank = kwargs.get("rank")
            with open(Path(self.path) / (".metadata" if rank is None else f"__{rank}.metadata"), "rb") as f:
                metadata = Unpickler(f).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return Reader(folder)


def whole_bytes(parts: Any) -> bytes | None:
    """The trained model as one ordinary safetensors file (a collective): rank 0 gets the bytes."""
    sharder: Sharder = parts.sharded
    if sharder.world == 1:
        return weights.state_bytes(parts.module)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    full = get_model_state_dict(parts.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if sharder.rank != 0:
        return None
    return weights.state_bytes(types.SimpleNamespace(state_dict=lambda: full))


# --- units ------------------------------------------------------------------------------------


def unit_paths(compiled: Any, cfg: TrainConfig) -> list[str]:
    """The module paths sharded as units: each copy of a repeated block or group (outermost
    repeats), or `train.fsdp_units`, where a repeated node's path stands for each of its copies."""
    modules = dict(compiled.module.named_modules())
    if cfg.fsdp_units is None:
        return _repeated(compiled.typed.graph.root)
    out: list[str] = []
    for path in cfg.fsdp_units:
        if not path or path not in modules:
            hint = did_you_mean(path, [m for m in modules if m], "module")
            raise SpecError.at(cfg.fsdp_units_loc or cfg.loc, f"fsdp_units: the model has no module '{path}'",
                               hint or "name a block or group node's path, e.g. transformer.h")
        kids = [name for name, _ in modules[path].named_children()]
        numbered = bool(kids) and all(k.isdigit() for k in kids)
        out += [f"{path}.{k}" for k in kids] if numbered else [path]
    return out


def _repeated(scope: Any) -> list[str]:
    out: list[str] = []
    for item in scope.items:
        if item.repeat and item.scopes:
            out += [s.path for s in item.scopes]
        else:
            for s in item.scopes:
                out += _repeated(s)
    return out


def regroup(gm: fx.GraphModule, unit: str) -> None:
    """Move the nodes of module `unit` out of `gm`'s flat graph into a graph module of their own at
    the same path, holding the same submodules (the state_dict keys do not change), and call it
    from `gm` instead. Its inputs: the values its nodes read from outside; its outputs: those read
    outside of it."""
    inside = _members(gm.graph, unit)
    if not inside:
        raise SpecError.at(file_loc("fsdp_units"), f"module '{unit}' runs no nodes of the graph",
                           "list modules that compute something (a block or group node)")
    members = set(inside)
    inputs = list(dict.fromkeys(a for n in inside for a in n.all_input_nodes if a not in members))
    outputs = [n for n in inside if any(u not in members for u in n.users)]
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    users = [u for o in outputs for u in o.users if u not in members]
    last_input = max((order[a] for a in inputs), default=-1)
    if users and last_input > min(order[u] for u in users):
        raise SpecError.at(file_loc("fsdp_units"), f"module '{unit}' is not one self-contained step of the graph",
                           "list modules whose inputs are all computed before they run")
    holder = gm.get_submodule(unit)
    sub = _subgraph(inside, inputs, outputs, unit)
    block = fx.GraphModule(holder, sub, class_name="Unit")
    for name, child in holder.named_children():  # the originals, not the containers GraphModule made
        block._modules[name] = child
    parent, _, name = unit.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, block)
    anchor = next(n for n in gm.graph.nodes if order[n] == last_input) if inputs else inside[0].prev
    with gm.graph.inserting_after(anchor):
        call = gm.graph.call_module(unit, tuple(inputs))
    _replace_outputs(gm.graph, call, outputs, members)
    for n in reversed(inside):
        gm.graph.erase_node(n)


def _members(graph: fx.Graph, unit: str) -> list[fx.Node]:
    """The nodes of module `unit`: those it names (by spec path or module target), and the
    helper nodes (sizes, getitems) that only its nodes read."""
    prefix = unit + "."
    named = set()
    for n in graph.nodes:
        path = n.meta.get("specc_path") or (n.target if n.op == "call_module" else None)
        if isinstance(path, str) and (path == unit or path.startswith(prefix)):
            named.add(n)
    for n in reversed(list(graph.nodes)):  # helpers, users first
        if n in named or n.op not in ("call_function", "call_method") or n.meta.get("specc_path"):
            continue
        if n.users and all(u in named for u in n.users):
            named.add(n)
    return [n for n in graph.nodes if n in named]


def _subgraph(inside: list[fx.Node], inputs: list[fx.Node], outputs: list[fx.Node], unit: str) -> fx.Graph:
    sub = fx.Graph()
    env: dict[fx.Node, fx.Node] = {a: sub.placeholder(a.name) for a in inputs}
    for n in inside:
        env[n] = sub.node_copy(n, lambda x: env[x])
        if n.op in ("call_module", "get_attr"):
            env[n].target = n.target[len(unit) + 1:]
    sub.output(env[outputs[0]] if len(outputs) == 1 else tuple(env[o] for o in outputs))
    return sub


def _replace_outputs(graph: fx.Graph, call: fx.Node, outputs: list[fx.Node], members: set[fx.Node]) -> None:
    """Readers outside the unit read the call (or its i-th result) instead of the unit's nodes."""
    outside = lambda u: u not in members  # noqa: E731
    if len(outputs) == 1:
        outputs[0].replace_all_uses_with(call, delete_user_cb=outside)
        return
    anchor = call
    for i, o in enumerate(outputs):
        with graph.inserting_after(anchor):
            anchor = graph.call_function(operator.getitem, (call, i))
        o.replace_all_uses_with(anchor, delete_user_cb=lambda u, a=anchor: u not in members and u is not a)
