"""Hugging Face `save_pretrained` folders as weights (`specc build SPEC --weights DIR`).

    DIR/config.json                       the model's config: its model_type and sizes
    DIR/model.safetensors                 the weights, or
    DIR/model.safetensors.index.json      {"weight_map": {key: shard}} over
    DIR/model-00001-of-00003.safetensors  ... the shards

The spec's `hf:` section (compiler/hf_section.py) says which model_types it reads and which config
field gives each param; config.json's values become overrides, and `--set` applies after them. Every
tensor stays memory-mapped (weights.read): the import holds a checkpoint once, in the page cache.
Nothing here imports torch at import time, and transformers is never needed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.errors import Loc, Source, SpecError, file_loc
from compiler.hf_section import HFSection, lookup

CONFIG, SINGLE, INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
_SHARD = re.compile(r"(.+)-(\d+)-of-(\d+)\.(safetensors|bin)")


@dataclass(frozen=True)
class Folder:
    """A checked folder: its config and the weight files that hold every key."""

    path: Path
    config: dict[str, Any]
    config_text: str
    files: tuple[Path, ...]
    weight_map: dict[str, str] | None  # key -> shard file name, from the index


def _err(where: Path | Loc, message: str, hint: str) -> SpecError:
    return SpecError.at(where if isinstance(where, Loc) else file_loc(str(where)), message, hint)


def open_folder(path: str | Path) -> Folder:
    """Read config.json and find the weight files; a missing piece is a located error."""
    path = Path(path)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise _err(path, "not a Hugging Face folder: it has no config.json",
                   "pass a folder written by save_pretrained (config.json and model.safetensors), or a weight file")
    text = config_path.read_text(errors="replace")
    try:
        config = json.loads(text)
    except ValueError as e:
        line, col = getattr(e, "lineno", 0), getattr(e, "colno", 0)
        raise SpecError.at(Loc(str(config_path), line, col, Source(str(config_path), text)),
                           f"config.json is not valid JSON: {getattr(e, 'msg', e)}", "save the model again") from None
    if not isinstance(config, dict):
        raise _err(config_path, "config.json is not a JSON object", "save the model again with save_pretrained")
    files, weight_map = _weight_files(path)
    return Folder(path, config, text, files, weight_map)


def _weight_files(path: Path) -> tuple[tuple[Path, ...], dict[str, str] | None]:
    for index_name, single in ((INDEX, SINGLE), (BIN_INDEX, BIN)):
        if (path / index_name).is_file():
            weight_map = _read_index(path / index_name)
            return tuple(_shard(path, index_name, name) for name in dict.fromkeys(weight_map.values())), weight_map
        if (path / single).is_file():
            return (path / single,), None
    shards = sorted(p.name for p in path.iterdir() if _SHARD.fullmatch(p.name))
    if shards:
        raise _err(path, f"the folder has shards ({shards[0]}, …) but no {INDEX} naming their keys",
                   "copy the index file from where the shards came from")
    raise _err(path, f"the folder has no weights: neither {SINGLE} nor {INDEX}",
               "save them with model.save_pretrained(DIR) (safetensors is its default)")


def _read_index(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text(errors="replace"))
    except ValueError as e:
        raise _err(index, f"not valid JSON: {e}", "save the model again") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise _err(index, "the index has no weight_map (tensor name -> shard file)", "save the model again")
    return weight_map


def _shard(path: Path, index_name: str, name: str) -> Path:
    shard = path / name
    if "/" in name or "\\" in name or name in ("", ".", "..") or not shard.is_file():
        m = _SHARD.fullmatch(name)
        what = f"shard {int(m.group(2))} of {int(m.group(3))}" if m else "a weight file"
        raise _err(path / index_name, f"the index names {what}, '{name}', which is not in the folder",
                   "the download or copy is incomplete: fetch the missing shard, or save the model again")
    return shard


def read_state(folder: Folder) -> dict[str, Any]:
    """Every tensor of the folder, memory-mapped; each key where the index says it is."""
    from . import weights
    state: dict[str, Any] = {}
    for file in folder.files:
        part = weights.read(file)
        if folder.weight_map is not None:
            named = [k for k, v in folder.weight_map.items() if v == file.name]
            lacking = [k for k in named if k not in part]
            if lacking:
                raise _err(file, f"the index puts {len(lacking)} tensor(s) in this shard that it does not hold: "
                           f"{', '.join(lacking[:4])}", "the shard and the index come from different saves")
        state.update(part)
    return state


def params_for(folder: Folder, section: HFSection | None, spec_file: str,
               defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec's params from config.json, after checking the model_type and the expected values;
    each of the same kind as the param's default in `defaults` (the spec's written values)."""
    if section is None:
        raise _err(Path(spec_file), "the spec has no hf: section, so it cannot read a Hugging Face folder",
                   "add hf: {model_type: [...], config: {field: param, ...}}, as specs/zoo/llama.yaml does")
    where = f"{spec_file}:{section.loc.line}" if section.loc.line else spec_file
    model_type = folder.config.get("model_type")
    if model_type not in section.model_types:
        raise SpecError.at(_key_loc(folder, "model_type"), f"the folder's model_type is {model_type!r}, but "
                           f"{spec_file} reads {', '.join(map(repr, section.model_types))}",
                           f"build it with the spec for {model_type!r} (specs/zoo/ has llama, qwen2, gpt2, bert), "
                           f"or add it to hf.model_type ({where}) if the architecture is the same")
    for field, allowed in section.expect.items():
        value = lookup(folder.config, field)
        if value is not None and value not in allowed:
            raise SpecError.at(_key_loc(folder, field), f"config.json's {field} is {value!r}, which "
                               f"{spec_file} does not implement (it reads {', '.join(map(repr, allowed))})",
                               f"use a spec that implements it, or extend hf.expect and the layers ({where})")
    return _mapped(folder, section, spec_file, defaults or {})


def _mapped(folder: Folder, section: HFSection, spec_file: str, defaults: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for param in dict.fromkeys(f.param for f in section.fields):
        sources = section.sources(param)
        found = next(((f, v) for f, v in ((f, lookup(folder.config, f.field)) for f in sources) if v is not None), None)
        if found is not None:
            _same_kind(folder, found[0].field, found[1], param, defaults.get(param), spec_file)
            out[param] = found[1]
        elif not any(f.optional for f in sources):
            names = " or ".join(repr(f.field) for f in sources)
            loc = sources[0].loc
            raise _err(folder.path / CONFIG, f"config.json has no {names}, which the spec needs for its param "
                       f"'{param}'", f"add it to config.json, or mark it optional in hf.config ({spec_file}:"
                       f"{loc.line})")
    return out


_KINDS = ((bool, "true or false"), ((int, float), "a number"), (str, "a string"), (list, "a list"), (dict, "a mapping"))


def _same_kind(folder: Folder, field: str, value: Any, param: str, default: Any, spec_file: str) -> None:
    """A config value must be what the param's written default is (a `${...}` default: anything)."""
    if default is None or isinstance(default, str) and "$" in default:
        return
    kind = next(((t, name) for t, name in _KINDS if isinstance(default, t)), None)
    if kind is None or isinstance(value, kind[0]) and isinstance(value, bool) == isinstance(default, bool):
        return
    raise SpecError.at(_key_loc(folder, field), f"config.json's {field} is {value!r}, but param '{param}' of "
                       f"{spec_file} is {kind[1]}", "fix config.json, or save the model again")


def _key_loc(folder: Folder, field: str) -> Loc:
    """Where config.json writes `field`'s last key (first occurrence), for the caret."""
    name = str(folder.path / CONFIG)
    key = field.rsplit(".", 1)[-1]
    for n, line in enumerate(folder.config_text.splitlines(), 1):
        col = line.find(f'"{key}"')
        if col >= 0:
            return Loc(name, n, col + 1, Source(name, folder.config_text))
    return file_loc(name)
