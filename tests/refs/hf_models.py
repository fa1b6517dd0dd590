"""Test-only Hugging Face references: transformers (pinned in pyproject's dev extra) builds each zoo
model offline from a config object with random weights, and `save_pretrained` writes the folder that
`specc build SPEC --weights DIR` reads. The product never imports transformers.

transformers imports torchvision's image code whenever it can find the package; torchvision lives off
sys.path in <venv>/refs and leaves sys.modules after tests/refs/torchvision_models.py loads its model
files, so the two references never see each other.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

# each zoo spec's reference: (config class, model class), by the spec's stem
CLASSES = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "bert": ("BertConfig", "BertModel"),
}


def available() -> bool:
    try:
        import transformers  # noqa: F401
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _torch_untouched():
    """transformers adds `smart_apply` to torch.nn.Module while it initializes a model; take it away
    again, so nothing else in the process (specc's catalog of Module attributes) sees a patched torch."""
    before = set(vars(torch.nn.Module))
    try:
        yield
    finally:
        for name in set(vars(torch.nn.Module)) - before:
            delattr(torch.nn.Module, name)


def model(stem: str, config: dict[str, Any], seed: int = 0) -> Any:
    """The reference model for a zoo spec, from config.json-style fields; in eval mode."""
    import transformers
    config_cls, model_cls = (getattr(transformers, n) for n in CLASSES[stem])
    torch.manual_seed(seed)
    with _torch_untouched():
        m = model_cls(config_cls(**config))
    with torch.no_grad():  # move every float off its init (zero biases, unit norms would hide swapped keys)
        g = torch.Generator().manual_seed(seed + 1)
        for t in m.state_dict().values():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    return m.eval()


def save(m: Any, folder: Path, shard: str | None = None) -> Path:
    """`save_pretrained`, sharded at `shard` (e.g. "20KB") when given."""
    m.save_pretrained(str(folder), **({"max_shard_size": shard} if shard else {}))
    return folder
