"""Choosing the next token from logits: temperature, top-k, top-p (nucleus), seeded."""
from __future__ import annotations

from typing import Any

import torch


def pick(logits: torch.Tensor, sampling: Any, generator: torch.Generator) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids. `top_k=1` is the argmax, whatever the seed."""
    if sampling.top_k == 1:
        return logits.argmax(-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        ordered, order = torch.sort(logits, descending=True)
        probs = torch.softmax(ordered, -1)
        # drop a token once the ones before it already hold top_p of the mass (the first always stays)
        drop = probs.cumsum(-1) - probs >= sampling.top_p
        logits = logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).view(-1).to(logits.device)
