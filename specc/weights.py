"""Weight files: reading them without unpickling anything, renaming their keys, and loading them
into a model strictly (every key present, none extra, every shape and dtype equal).

    specc build specs/zoo/resnet.yaml --set layers=[3,4,6,3] --set bottleneck=true --weights resnet50.pth
    specc build SPEC --weights ckpt.pt --weights-map _orig_mod.      # strip a prefix
    specc build SPEC --weights ckpt.pt --weights-map '^module\\.(.*)=\\1'   # or rewrite with a regex
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from compiler.errors import Diagnostic, SpecError, file_loc

MAX_LISTED = 8
_NESTED = ("model", "state_dict", "model_state_dict", "module")  # where checkpoints keep their weights


def _err(path: Path | str, message: str, hint: str) -> SpecError:
    return SpecError.at(file_loc(str(path)), message, hint)


def read(path: str | Path) -> dict[str, Any]:
    """name -> tensor from a .safetensors file, or from a `torch.save`d state_dict (weights_only:
    plain tensors and containers, nothing executed). A checkpoint that nests its weights under
    `model` or `state_dict` (nanoGPT's ckpt.pt, Lightning's) is opened there."""
    path = Path(path)
    if not path.is_file():
        raise _err(path, "weight file does not exist" if not path.exists() else "weight file is not a regular file",
                   "pass a .safetensors file or a torch.save'd state_dict")
    if path.stat().st_size == 0:
        raise _err(path, "weight file is empty", "pass a .safetensors file or a torch.save'd state_dict")
    with path.open("rb") as f:
        head = f.read(9)
    if path.suffix == ".safetensors" or head[8:9] == b"{":  # an 8-byte header length, then JSON
        return _read_safetensors(path)
    return _read_torch(path)


def _read_safetensors(path: Path) -> dict[str, Any]:
    """Memory-mapped: each tensor is a view of the file's pages (copy-on-write), read when touched,
    so a checkpoint assigned into a model is held once, by the page cache."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file as st_load_file
    try:
        return dict(st_load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as e:
        raise _err(path, f"not a readable weight file: {str(e)[:200]}", "pass a .safetensors file or a torch.save'd "
                   "state_dict") from None


def _read_torch(path: Path) -> dict[str, Any]:
    import pickle
    import warnings

    import torch
    try:
        with warnings.catch_warnings():  # torch warns about old pickles on the way to refusing them
            warnings.simplefilter("ignore")
            try:  # a zip checkpoint (torch >= 1.6) maps its tensors instead of reading them in
                obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError) as e:
        text = [" ".join(t.split()) for t in str(e).strip().splitlines() if t.strip()]
        reason = next((t for t in text if "Unsupported" in t or "global" in t.lower()), text[0] if text else "")
        reason = reason or ("the file ends too soon" if isinstance(e, EOFError) else type(e).__name__)
        raise _err(path, f"not a state_dict specc can read safely: {reason[:200]}",
                   "specc loads torch files with weights_only=True and never unpickles code; save "
                   "model.state_dict() (or convert to .safetensors)") from None
    return _state_of(obj, path)


def _state_of(obj: Any, path: Path) -> dict[str, Any]:
    import torch
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):
        for key in _NESTED:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    raise _err(path, "the file holds no state_dict (a mapping of names to tensors)",
               "save model.state_dict(); a checkpoint may nest it under 'model' or 'state_dict'")


def rename(state: dict[str, Any], rules: Iterable[str]) -> dict[str, Any]:
    """Apply `--weights-map` rules in order: `PREFIX` strips a literal prefix, `REGEX=REPLACEMENT`
    rewrites each key with re.sub (count 1)."""
    for rule in rules:
        if "=" in rule:
            pattern, _, repl = rule.partition("=")
            try:
                rx = re.compile(pattern)
                state = {rx.sub(repl, k, count=1): v for k, v in state.items()}
            except re.error as e:
                raise SpecError.at(file_loc("--weights-map"), f"bad rule {rule!r}: {e}",
                                   "write PREFIX, or REGEX=REPLACEMENT such as '^module\\.(.*)=\\1'") from None
        else:
            state = {k[len(rule):] if k.startswith(rule) else k: v for k, v in state.items()}
    return state


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def load_strict(module: Any, state: dict[str, Any], origin: str | Path, aliases: dict[str, str] | None = None,
                assign: bool = False) -> None:
    """Load `state` into `module`, refusing anything that does not fit exactly. `aliases` maps a tied
    key to the key it shares a tensor with: a file may hold either one. With `assign`, the file's
    tensors become the module's (a module built with its parameters on the meta device takes the
    memory-mapped tensors as they are: nothing is copied), and the ties are made again."""
    state = _untie(dict(state), aliases or {}, origin)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and (tuple(state[k].shape) != tuple(own[k].shape) or state[k].dtype != own[k].dtype)]
    diags = []
    if missing:
        diags.append((f"missing {len(missing)} key(s): {_listed(missing)}", None))
    if extra:
        diags.append((f"unexpected {len(extra)} key(s): {_listed(extra)}", None))
    for k in bad[:MAX_LISTED]:
        diags.append((f"'{k}' is {tuple(state[k].shape)} {str(state[k].dtype).replace('torch.', '')} in the file but "
                      f"{tuple(own[k].shape)} {str(own[k].dtype).replace('torch.', '')} in the model",
                      _transposed_hint(k, tuple(state[k].shape), tuple(own[k].shape))))
    if diags:
        hint = _hint(missing, extra)
        raise SpecError([Diagnostic(str(origin), 0, 0, f"weights do not fit the model: {d}", h or hint) for d, h in diags])
    import torch
    with torch.no_grad():
        module.load_state_dict(state, strict=True, assign=assign)
    if assign:
        for alias, key in (aliases or {}).items():  # assign gave each name its own Parameter: one again
            owner, _, leaf = alias.rpartition(".")
            setattr(module.get_submodule(owner), leaf, module.get_parameter(key))


def _untie(state: dict[str, Any], aliases: dict[str, str], origin: str | Path) -> dict[str, Any]:
    """Both names of each tied tensor, from whichever one the file holds (HF leaves lm_head.weight out)."""
    for alias, key in aliases.items():
        if alias in state and key in state and state[alias] is not state[key] and (
                state[alias].shape != state[key].shape or not bool((state[alias] == state[key]).all())):
            raise SpecError.at(file_loc(str(origin)), f"'{alias}' and '{key}' are one tensor in the model (tied) but "
                               "differ in the file", "the file's model was not tied: drop one key, or untie the spec")
        if alias not in state and key in state:
            state[alias] = state[key]
        elif key not in state and alias in state:
            state[key] = state[alias]
    return state


def _transposed_hint(key: str, stored: tuple, wanted: tuple) -> str | None:
    if len(stored) == 2 and stored == wanted[::-1] and stored != wanted:
        return (f"'{key}' is stored transposed, {list(stored)} for the model's {list(wanted)} (as GPT-2's Conv1D "
                f"stores [in, out]): declare it as a Parameter of shape {list(stored)} and use matmul, as "
                "specs/zoo/gpt2.yaml does")
    return None


def _hint(missing: list[str], extra: list[str]) -> str:
    """Spot a common prefix that --weights-map would strip."""
    if extra and missing:
        for e in extra:
            for m in missing:
                if e.endswith(m) and e != m:
                    return f"the file's keys carry a prefix: try --weights-map {e[:-len(m)]}"
    return "check that the file belongs to this spec and these params (specc diff shows what differs)"


def aliases(module: Any) -> dict[str, str]:
    """Tied keys: each name of a shared tensor after the first, mapped to the first."""
    first: dict[int, str] = {}
    out = {}
    for name, t in module.state_dict(keep_vars=True).items():
        key = id(t)
        if key in first:
            out[name] = first[key]
        else:
            first[key] = name
    return out


def state_bytes(module: Any) -> bytes:
    """The module's state_dict as safetensors; a tied tensor is written under each of its names."""
    from safetensors.torch import save
    seen: set[int] = set()
    out = {}
    for k, v in module.state_dict().items():
        t = v.detach().contiguous().cpu()
        if t.data_ptr() in seen:
            t = t.clone()
        seen.add(t.data_ptr())
        out[k] = t
    return save(out)


def write_state(module: Any, path: str | Path) -> None:
    """Write the module's state_dict as safetensors straight from its tensors (no serialized copy in
    memory): into a temp file beside `path`, fsync, then rename over it. A tied tensor is written
    under each of its names, as `state_bytes` does."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from .fsutil import atomic_write_with
    tensors: dict[str, Any] = {}
    seen: set[int] = set()
    for k, v in module.state_dict().items():
        t = v.detach().cpu()
        t = t if t.is_contiguous() else t.contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()  # safetensors refuses shared storage; a tied tensor is one copy of one tensor
        seen.add(ptr)
        tensors[k] = t

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp)
        except SafetensorError as e:  # a full disk, a file-size limit: the caller's WriteError
            raise OSError(str(e)) from None
    atomic_write_with(path, write)


def load_file(module: Any, path: Path) -> None:
    """A run's own weights (model.safetensors), strictly."""
    load_strict(module, _read_safetensors(path), path, aliases(module))
