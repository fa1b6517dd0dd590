"""`specc generate`: sample text from a language-model run (a `text:` run's byte tokens, or the ids of
a `tokens:` run), seeded, so the same seed and prompt give the same text.

    specc generate runs/shakespeare --prompt "ROMEO:" --tokens 200 --temperature 0.8 --top-k 40 --seed 1
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.errors import SpecError, file_loc

from . import runs


def prompt_ids(prompt: str, byte_tokens: bool, where: str = "--prompt") -> list[int]:
    """A text run's prompt is its UTF-8 bytes; a tokens: run's is token ids ("464 2068 7586")."""
    if byte_tokens:
        return list(prompt.encode("utf-8"))
    try:
        return [int(t) for t in prompt.replace(",", " ").split()]
    except ValueError:
        raise SpecError.at(file_loc(where), f"a tokens: run reads token ids, not {prompt[:40]!r}",
                           "write ids separated by spaces: 464 2068 7586") from None


def generate(target: Any = None, prompt: str = "", tokens: int = 100, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0) -> str:
    """The prompt followed by `tokens` sampled tokens (text for byte-level runs, ids otherwise)."""
    if tokens < 1:
        raise SpecError.at(file_loc("--tokens"), f"--tokens must be at least 1, got {tokens}", "--tokens 200")
    if temperature <= 0:
        raise SpecError.at(file_loc("--temperature"), f"--temperature must be > 0, got {temperature}", "--temperature 0.8")
    if top_k is not None and top_k < 1:
        raise SpecError.at(file_loc("--top-k"), f"--top-k must be at least 1, got {top_k}", "--top-k 40")
    run_dir = Path(runs.target_path(target))
    spec = runs.load_run(run_dir)
    source = spec.train.data.source if spec.train is not None else None
    if source not in ("text", "tokens"):
        raise SpecError.at(file_loc(str(run_dir)), "generate samples from language models (text: or tokens: data)",
                           "use specc predict for other runs")
    ids = prompt_ids(prompt, source == "text")
    if not ids:
        raise SpecError.at(file_loc("--prompt"), "the prompt is empty", "give it some text: --prompt 'Once upon'")
    out = _sample(run_dir, spec, ids, tokens, temperature, top_k, seed)
    if source == "text":
        return bytes(out).decode("utf-8", errors="replace")
    return " ".join(str(i) for i in out)


def _sample(run_dir: Path, spec: Any, ids: list[int], tokens: int, temperature: float, top_k: int | None,
            seed: int) -> list[int]:
    import torch

    from .building import compile_run
    model = compile_run(run_dir).module.train(False)  # inference mode
    inp = next(iter(spec.inputs.values()))
    exact = isinstance(inp.shape[1], int)  # a fixed time dim: every window is exactly that long
    limit = inp.shape[1] if exact else spec.dims[inp.shape[1]].max
    if exact and len(ids) < limit:
        raise SpecError.at(file_loc("--prompt"), f"the model reads exactly {limit} tokens; the prompt has {len(ids)}",
                           "give a longer prompt, or make the spec's time dim symbolic")
    vocab = int(inp.range[1]) if inp.range else None
    if vocab is not None and max(ids) >= vocab:
        raise SpecError.at(file_loc("--prompt"), f"the prompt holds token {max(ids)}; the model's vocabulary is {vocab}",
                           "use ids below the vocabulary size")
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        for _ in range(tokens):
            window = x[:, -limit:] if limit else x
            logits = model(window)
            logits = (logits[0] if isinstance(logits, tuple) else logits)[:, -1, :] / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g)
            x = torch.cat([x, nxt], dim=1)
    return x[0].tolist()

