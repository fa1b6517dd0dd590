"""What a language-model run reads and writes: token ids, UTF-8 bytes (`text:` runs) or text through
a `tokenizer.json` (the `tokenizers` library), found in the run folder or in the folder its weights
were imported from."""
from __future__ import annotations

import codecs as _codecs
from pathlib import Path
from typing import Any, Callable, Sequence

from compiler.errors import SpecError, file_loc

from . import runs


class Codec:
    """kind: `ids` ("81 218 150" in and out), `bytes` (a text: run) or `tokenizer`."""

    def __init__(self, kind: str, tokenizer: Any = None):
        self.kind, self.tokenizer = kind, tokenizer

    def encode(self, text: str) -> list[int]:
        if self.kind == "bytes":
            return list(text.encode("utf-8"))
        if self.kind == "tokenizer":
            return list(self.tokenizer.encode(text, add_special_tokens=False).ids)
        return parse_ids(text)

    def decode(self, ids: Sequence[int]) -> str:
        if self.kind == "bytes":
            return bytes(ids).decode("utf-8", errors="replace")
        if self.kind == "tokenizer":
            return self.tokenizer.decode(list(ids), skip_special_tokens=False)
        return " ".join(str(i) for i in ids)

    def pieces(self, prompt: Sequence[int] = ()) -> Callable[[int], str]:
        """A function from each new id to the text it adds after `prompt`, for streaming."""
        if self.kind == "ids":
            return lambda i: f" {i}"  # after the prompt's ids, as `generate` prints them
        if self.kind == "bytes":
            decoder = _codecs.getincrementaldecoder("utf-8")(errors="replace")
            return lambda i: decoder.decode(bytes([i]))
        seen = list(prompt)
        done = [self.decode(seen)]

        def token_piece(i: int) -> str:
            # the difference of whole decodes, as transformers' TextStreamer: a word-level or sentencepiece
            # tokenizer puts the space between words only when it sees both
            seen.append(i)
            text = self.decode(seen)
            if text.endswith("\ufffd") or not text.startswith(done[0]):  # a character split across tokens
                return ""
            new, done[0] = text[len(done[0]):], text
            return new
        return token_piece

    def joined(self, prompt: list[int], new: list[int], stop: Sequence[str]) -> str:
        """The prompt and its continuation, cut before the first stop string."""
        if self.kind == "ids":
            return self.decode(prompt + new)
        head, whole = self.decode(prompt), self.decode(prompt + new)
        text = whole[len(head):] if whole.startswith(head) else self.decode(new)
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        return head + (text[:cut] if cut >= 0 else text)


class StopText:
    """Streams text but holds back what could still become a stop string; `feed` says when one appeared."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops if s in self.pending]
        if hits:
            out, self.pending = self.pending[:min(hits)], ""
            return out, True
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def parse_ids(text: str, where: str = "--prompt") -> list[int]:
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise SpecError.at(file_loc(where), f"this run reads token ids, not {text[:40]!r}",
                           "write ids separated by spaces: 81 218 150 (or add a tokenizer.json to the run)") from None
    if any(i < 0 for i in ids):
        raise SpecError.at(file_loc(where), f"token ids are >= 0, got {min(ids)}", "write ids such as 81 218 150")
    return ids


def _folders(run_dir: Path) -> list[Path]:
    """The run folder, then the folder its weights were imported from."""
    folders = [run_dir]
    summary = runs.read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    imported = (summary.get("weights") or {}).get("imported")
    if imported:
        src = Path(imported)
        folders.append(src if src.is_dir() else src.parent)
    return folders


def tokenizer_file(run_dir: Path) -> Path | None:
    """tokenizer.json in the run folder, else in the folder its weights came from."""
    return next((f / "tokenizer.json" for f in _folders(run_dir) if (f / "tokenizer.json").is_file()), None)


def special_tokens(run_dir: Path) -> dict[str, Any]:
    """bos/eos/pad token ids from an imported folder's generation_config.json or config.json ({} if none)."""
    found: dict[str, Any] = {}
    for folder in reversed(_folders(run_dir)):
        for name in ("config.json", "generation_config.json"):  # the latter wins, as in transformers
            path = folder / name
            data = runs.read_json(path) if path.is_file() else {}
            found.update({k: data[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                          if isinstance(data.get(k), (int, list))})
    return found


def codec_for(run_dir: Path, spec: Any) -> Codec:
    """A text: run's tokens are bytes (whatever tokenizer its weights came with); else a tokenizer.json
    gives text; else token ids."""
    if spec.train is not None and spec.train.data.source == "text":
        return Codec("bytes")
    path = tokenizer_file(run_dir)
    if path is None:
        return Codec("ids")
    from tokenizers import Tokenizer
    try:
        return Codec("tokenizer", Tokenizer.from_file(str(path)))
    except Exception as e:  # the library raises its own exception type for a bad file
        raise SpecError.at(file_loc(str(path)), f"cannot read the tokenizer: {str(e).splitlines()[0]}",
                           "write it with tokenizer.save(path) or save_pretrained") from None
