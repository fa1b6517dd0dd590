"""`specc generate`: sample from any causal language-model run, trained or imported, through the
KV-cache decoder the compiler derives from its spec (`compiler.kvcache`), or through its ONNX
export with past (`--onnx`).

What goes in and out depends on the run: with a `tokenizer.json` (in the run folder or the folder
its weights were imported from) text, decoded with the `tokenizers` library; for a `text:` run its
UTF-8 bytes; otherwise token ids ("81 218 150"). The same seed and prompt give the same tokens.

    specc generate runs/llama --prompt "81 218 150" --tokens 32 --top-k 1
    specc generate runs/shakespeare --prompt "ROMEO:" --tokens 200 --temperature 0.8 --top-p 0.9 --seed 1

For servers, `stream` yields one `Token` at a time (see its docstring); `LanguageModel.load` loads a
run once for many requests.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

from compiler.errors import SpecError, file_loc

from . import runs
from .codecs import Codec, StopText, codec_for, parse_ids, special_tokens


@dataclass(frozen=True)
class Sampling:
    """How each next token is chosen. `top_k=1` is greedy (any seed gives the same tokens)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()  # stop at the first of these (text, or token ids without a tokenizer); not emitted
    seed: int = 0

    @classmethod
    def of(cls, options: dict[str, Any]) -> "Sampling":
        known = {f.name for f in fields(cls)}
        for key in options:
            if key not in known:
                raise SpecError.at(file_loc(key), f"unknown sampling option '{key}'",
                                   "use " + ", ".join(sorted(known)))
        stop = options.get("stop") or ()
        return cls(**dict(options, stop=(stop,) if isinstance(stop, str) else tuple(stop))).checked()

    def checked(self) -> "Sampling":
        if self.temperature <= 0:
            raise SpecError.at(file_loc("--temperature"), f"--temperature must be > 0, got {self.temperature}",
                               "--temperature 0.8 (for greedy decoding: --top-k 1)")
        if self.top_k is not None and self.top_k < 1:
            raise SpecError.at(file_loc("--top-k"), f"--top-k must be at least 1, got {self.top_k}", "--top-k 40")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise SpecError.at(file_loc("--top-p"), f"--top-p must be in (0, 1], got {self.top_p}", "--top-p 0.9")
        return self


@dataclass(frozen=True)
class Token:
    """One generated token: its id, and the text it adds (may be "" while a character is incomplete,
    or while it could be the start of a stop string; without a tokenizer, " 81": the id after a space).
    A last Token with id -1 carries text held back for a stop string that never came."""

    id: int
    text: str


class LanguageModel:
    """A causal LM run loaded once: its decoder (torch, or ONNX with past) and its codec. The decoder's
    caches live in it, so one generation runs at a time: a second `stream`/`generate` from another
    thread waits for the first to finish (a server batches prompts through `generate` instead)."""

    def __init__(self, run_dir: Path, decoder: Any, codec: Codec, vocab: int, eos: tuple[int, ...] = ()):
        self.run_dir, self.decoder, self.codec, self.vocab = run_dir, decoder, codec, vocab
        self.eos = set(eos)  # an imported model's end-of-text ids: generation stops there, as transformers' does
        self._busy = threading.Lock()

    @classmethod
    def load(cls, target: Any = None, onnx: bool = False, device: str | None = None) -> "LanguageModel":
        """`target`: a run folder (default: the latest run); `device`: auto (the default: CUDA when there
        is one), cpu, cuda or cuda:N for the torch decoder (the ONNX one runs in onnxruntime on the CPU)."""
        run_dir = Path(runs.target_path(target))
        spec = runs.load_run(run_dir)
        if onnx:
            if device not in (None, "auto", "cpu"):
                raise SpecError.at(file_loc("--device"), f"--onnx decodes in onnxruntime on the CPU; --device {device} "
                                   "is for the torch decoder", "drop --onnx to generate on the GPU, or drop --device")
            from exporters.with_past import OnnxDecoder
            decoder = OnnxDecoder.load(run_dir / "export" / "model_with_past.onnx")
        else:
            decoder = _torch_decoder(run_dir, device or "auto")
        vocab = decoder.vocab or _vocab_of(run_dir)
        eos = special_tokens(run_dir).get("eos_token_id")
        return cls(run_dir, decoder, codec_for(run_dir, spec), vocab, tuple(eos if isinstance(eos, list) else
                                                                              [] if eos is None else [eos]))

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        ids = list(prompt) if not isinstance(prompt, str) else self.codec.encode(prompt)
        if not ids:
            raise SpecError.at(file_loc("--prompt"), "the prompt is empty", "give it some tokens: --prompt '81 218 150'")
        bad = [i for i in ids if not 0 <= int(i) < self.vocab]
        if bad:
            raise SpecError.at(file_loc("--prompt"), f"the prompt holds token {bad[0]}; the model's vocabulary is "
                               f"{self.vocab} (ids 0..{self.vocab - 1})", "use ids below the vocabulary size")
        return [int(i) for i in ids]

    def stream(self, prompt: str | Sequence[int], tokens: int = 100, sampling: Sampling = Sampling()) -> Iterator[Token]:
        """The new tokens for one prompt, one at a time (the prompt is not repeated)."""
        ids = self.encode(prompt)
        _check_tokens(tokens)
        stop_ids, stop_text = self._stops(sampling.stop)
        pieces = self.codec.pieces(ids)
        with self._busy:  # released when the stream ends, or is closed or dropped by its reader
            for step in _sample_rows(self.decoder, [ids], tokens, sampling, stop_ids):
                new = int(step[0])
                if new < 0:
                    break
                text, done = stop_text.feed(pieces(new))
                if text or not done:
                    yield Token(new, text)
                if done:
                    return
            tail = stop_text.flush()
            if tail:
                yield Token(-1, tail)

    def generate(self, prompts: Sequence[str | Sequence[int]], tokens: int = 100,
                 sampling: Sampling = Sampling()) -> list[str]:
        """Each prompt followed by its continuation, all rows decoded as one batch."""
        rows = [self.encode(p) for p in prompts]
        _check_tokens(tokens)
        stop_ids, _ = self._stops(sampling.stop)
        new: list[list[int]] = [[] for _ in rows]
        with self._busy:
            for step in _sample_rows(self.decoder, rows, tokens, sampling, stop_ids):
                for b, t in enumerate(step):
                    if t >= 0:
                        new[b].append(int(t))
        return [self.codec.joined(r, n, sampling.stop) for r, n in zip(rows, new)]

    def _stops(self, stop: tuple[str, ...]) -> tuple[set[int], StopText]:
        if self.codec.kind != "ids":
            return set(self.eos), StopText(stop)
        ids = [parse_ids(s, "--stop") for s in stop]
        if any(len(i) != 1 for i in ids):
            raise SpecError.at(file_loc("--stop"), "without a tokenizer, each --stop is one token id",
                               "--stop 50256 (repeat --stop for several)")
        return {i[0] for i in ids} | self.eos, StopText(())


def stream(target: Any, prompt: str | Sequence[int], tokens: int = 100, sampling: Sampling | None = None,
           onnx: bool = False, device: str | None = None) -> Iterator[Token]:
    """Yield the generated tokens one at a time, as they are decoded: the interface for streaming
    servers (Server-Sent Events). Stable signature:

        stream(target, prompt, tokens=100, sampling=None, onnx=False, device=None) -> Iterator[Token]

    `target` is a run folder or a loaded `LanguageModel` (load once, stream many); `prompt` is text
    (token ids "81 218 150" for runs without a tokenizer) or a list of ids; `sampling` a `Sampling`
    (temperature, top_k, top_p, stop, seed). Each `Token` has `.id` and `.text` (the text it adds;
    concatenated after the prompt, the texts are the continuation). Errors in the input (ids outside the vocabulary,
    an empty prompt, bad settings) raise `SpecError` before the first token.

    >>> for tok in stream("runs/gpt", "81 218 150", tokens=8, sampling=Sampling(top_k=1)):
    ...     print(tok.id, tok.text)
    """
    lm = target if isinstance(target, LanguageModel) else LanguageModel.load(target, onnx=onnx, device=device)
    sampling = (sampling or Sampling()).checked()
    ids = lm.encode(prompt)  # errors now, not at the first next()
    _check_tokens(tokens)
    return lm.stream(ids, tokens, sampling)


def generate(target: Any = None, prompt: str | Sequence[Any] = "", tokens: int = 100, onnx: bool = False,
             device: str | None = None, **options: Any) -> Any:
    """The prompt followed by `tokens` sampled tokens: text, or ids separated by spaces. A list of
    prompts runs as one batch and gives a list. Options: temperature, top_k, top_p, stop, seed."""
    sampling = Sampling.of(options)
    lm = LanguageModel.load(target, onnx=onnx, device=device)
    batch = isinstance(prompt, (list, tuple)) and prompt and not isinstance(prompt[0], int)
    outs = lm.generate(list(prompt) if batch else [prompt], tokens, sampling)
    return outs if batch else outs[0]


def _check_tokens(tokens: int) -> None:
    if tokens < 1:
        raise SpecError.at(file_loc("--tokens"), f"--tokens must be at least 1, got {tokens}", "--tokens 200")


def _torch_decoder(run_dir: Path, device: str) -> Any:
    from compiler.kvcache import NotCausalLM, decoder

    from .building import compile_run
    from .devices import device_for
    where = device_for(device)  # refused before the weights are read
    compiled = compile_run(run_dir)
    compiled.module.train(False).to(where)
    try:
        return decoder(compiled)
    except NotCausalLM as e:  # other errors point at the run's spec.yaml: the attention or dims entry at fault
        d = e.diagnostics[0]
        raise SpecError.at(file_loc(str(run_dir)), f"cannot generate from this run: {d.message}",
                           "generate samples from causal language models; use specc predict for other runs") from None


def _vocab_of(run_dir: Path) -> int:
    summary = runs.read_json(run_dir / "summary.json")
    outs = summary.get("outputs") or {}
    shape = next(iter(outs.values())) if isinstance(outs, dict) and outs else None
    return int(shape[-1]) if shape and isinstance(shape[-1], int) else 2**31


def _sample_rows(decoder: Any, rows: list[list[int]], tokens: int, sampling: Sampling,
                 stop_ids: set[int]) -> Iterator[list[int]]:
    """Each step's new token per row (-1 once a row has stopped); ends when every row has."""
    import torch

    from .sampling import pick
    g = torch.Generator().manual_seed(sampling.seed)
    context = _Context(decoder, rows)
    logits = context.start()
    alive = [True] * len(rows)
    for _ in range(tokens):
        nxt = pick(logits, sampling, g)
        step = [int(t) if a and int(t) not in stop_ids else -1 for t, a in zip(nxt.tolist(), alive)]
        alive = [s >= 0 for s in step]
        yield step
        if not any(alive):
            return
        logits = context.step(nxt)


class _Context:
    """The decoder plus each row's tokens, so that a full cache can shift: when a row would pass the
    model's longest sequence, every row restarts from its last half (as llama.cpp's context shift)."""

    def __init__(self, decoder: Any, rows: list[list[int]]):
        self.decoder, self.rows = decoder, [list(r) for r in rows]
        self.limit = decoder.max_len

    def start(self) -> Any:
        keep = self.limit - 1 if max(len(r) for r in self.rows) >= self.limit else self.limit
        return self.decoder.start([r[-keep:] for r in self.rows])

    def step(self, nxt: Any) -> Any:
        for r, t in zip(self.rows, nxt.tolist()):
            r.append(int(t))
        if self.decoder.length >= self.limit:
            return self.decoder.start([r[-max(1, self.limit // 2):] for r in self.rows])
        return self.decoder.step(nxt)
