"""Export-time fx rewrites: known gaps of an exporter lowered into exact equivalents it can express.

They run on a copy of the compiled module, never on the compiler's graph, and each one keeps the
node's name and `specc_path`/`specc_loc` meta, so provenance, the divergence search and error
locations still point at the spec's node.

- 3-D `scaled_dot_product_attention` (q/k/v [batch, seq, dim], which torch accepts) becomes one head
  of a 4-D call and back: onnxscript translates only 4-D query, key and value.
- A call whose target fx cannot name in generated code (a static method, such as
  `Transformer.generate_square_subsequent_mask`) calls a module-level function instead.
"""
from __future__ import annotations

import copy
import importlib
from typing import Any, Callable, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from compiler.modules import ScaledDotProductAttention


def sdpa_one_head(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0, is_causal: bool = False,
                  scale: Optional[float] = None) -> torch.Tensor:
    """`F.scaled_dot_product_attention` on [batch, seq, dim] as a single head: [batch, 1, seq, dim]."""
    if attn_mask is not None and attn_mask.dim() == 3:  # [batch, L, S] -> [batch, 1, L, S]
        attn_mask = attn_mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1),
                                         attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    return out.squeeze(1)


def square_subsequent_mask(sz: int, device: Optional[torch.device] = None,
                           dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """`nn.Transformer.generate_square_subsequent_mask`, as a function fx can name (and TorchScript type)."""
    return torch.triu(torch.full((sz, sz), float("-inf"), dtype=dtype or torch.float32,
                                 device=device or torch.device("cpu")), diagonal=1)


_TYPED = {torch.nn.Transformer.generate_square_subsequent_mask: square_subsequent_mask}


def _nameable(target: Any) -> bool:
    """Whether fx's generated code can reach `target` by its qualified name."""
    from torch.fx.graph import _is_from_torch
    from torch.fx.node import _get_qualified_name
    if not callable(target) or not _is_from_torch(target):
        return True  # fx passes it to the code as a global
    try:
        module, _, name = _get_qualified_name(target).rpartition(".")
        return getattr(importlib.import_module(module), name) is target
    except Exception:
        return False


def _alias(target: Callable) -> Callable:
    def call(*args: Any, **kwargs: Any) -> Any:
        return target(*args, **kwargs)
    call.__name__ = call.__qualname__ = getattr(target, "__name__", "call")
    return call


def nameable_targets(module: fx.GraphModule) -> list[str]:
    """Point calls fx cannot name at module-level functions, in place; returns a note per node changed."""
    notes = []
    for node in module.graph.nodes:
        if node.op == "call_function" and not _nameable(node.target):
            name = getattr(node.target, "__qualname__", str(node.target))
            node.target = _TYPED.get(node.target) or _alias(node.target)
            notes.append(f"'{node.meta.get('specc_path', node.name)}' calls {name} through a module-level function")
    if notes:
        module.recompile()
    return notes


def _query_rank(node: fx.Node) -> int | None:
    query = node.args[0] if node.args else node.kwargs.get("query")
    meta = getattr(query, "meta", {}).get("tensor_meta")
    return len(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def sdpa_to_4d(module: fx.GraphModule, example: list[torch.Tensor]) -> list[str]:
    """3-D attention calls become `sdpa_one_head`, in place; returns a note per node changed."""
    candidates = [n for n in module.graph.nodes
                  if n.op == "call_function" and n.target is F.scaled_dot_product_attention
                  or n.op == "call_module" and isinstance(module.get_submodule(n.target), ScaledDotProductAttention)]
    if not candidates:
        return []
    with torch.no_grad():
        ShapeProp(module).propagate(*example)
    notes = []
    for node in candidates:
        if _query_rank(node) != 3:
            continue
        if node.op == "call_module":  # eval mode: the module's dropout is off
            sub = module.get_submodule(node.target)
            node.kwargs = dict(node.kwargs, is_causal=sub.is_causal, scale=sub.scale)
            node.op = "call_function"
        node.target = sdpa_one_head
        notes.append(f"'{node.meta.get('specc_path', node.name)}': 3-D scaled_dot_product_attention exported as "
                     "one head of a 4-D call")
    if notes:
        module.recompile()
    return notes


def for_onnx(module: fx.GraphModule, example: list[torch.Tensor]) -> tuple[fx.GraphModule, list[str]]:
    """The module the ONNX exporters see: a copy with the gaps above lowered away (the same module
    when nothing applies), and a note per rewrite."""
    copied = fx.GraphModule(module, copy.deepcopy(module.graph), module.__class__.__name__)
    copied.specc_output_names = getattr(module, "specc_output_names", [])
    notes = sdpa_to_4d(copied, example)
    if not notes:
        return module, []
    copied.graph.lint()
    return copied, notes
