"""Export-time fx rewrites: known gaps of an exporter lowered into exact equivalents it can express.

They run on a copy of the compiled module, never on the compiler's graph, and each one keeps the
node's name and `specc_path`/`specc_loc` meta, so provenance, the divergence search and error
locations still point at the spec's node.

- 3-D `scaled_dot_product_attention` (q/k/v [batch, seq, dim], which torch accepts) becomes one head
  of a 4-D call and back: onnxscript translates only 4-D query, key and value.
- `MaxPool1d` becomes a `max_pool2d` over a height of one (for pt2): torch.export specializes the
  length of a 1-D max pool to the example size.
- `x.bool()` becomes `x.to(torch.bool)` (for TorchScript, which has no `Tensor.bool`), so a causal
  mask does not force tracing.
"""
from __future__ import annotations

import copy
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


def max_pool1d_as_2d(x: torch.Tensor, kernel_size: int, stride: int, padding: int, dilation: int,
                     ceil_mode: bool, return_indices: bool) -> Any:
    """`F.max_pool1d` on [batch, channels, length] as a 2-D pool over [batch, channels, 1, length];
    the indices are the same (the height is one)."""
    out = F.max_pool2d(x.unsqueeze(-2), (1, kernel_size), (1, stride), (0, padding), (1, dilation), ceil_mode,
                       return_indices)
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


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


def _one(v: Any) -> int:
    return v[0] if isinstance(v, (tuple, list)) else v


def max_pool1d_to_2d(module: fx.GraphModule, example: list[torch.Tensor]) -> list[str]:
    """MaxPool1d modules become `max_pool1d_as_2d` calls, in place; returns a note per node changed."""
    notes = []
    for node in module.graph.nodes:
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target), torch.nn.MaxPool1d):
            continue
        m = module.get_submodule(node.target)
        stride = m.stride if m.stride is not None else m.kernel_size
        node.op, node.target = "call_function", max_pool1d_as_2d
        node.args = (node.args[0], _one(m.kernel_size), _one(stride), _one(m.padding), _one(m.dilation), m.ceil_mode,
                     m.return_indices)
        notes.append(f"'{node.meta.get('specc_path', node.name)}': MaxPool1d exported as a 2-D pool of height 1")
    if notes:
        module.recompile()
    return notes


def bool_as_to(module: fx.GraphModule, example: list[torch.Tensor]) -> list[str]:
    """`x.bool()` calls become `x.to(torch.bool)`, in place; returns a note per node changed."""
    notes = []
    for node in module.graph.nodes:
        if node.op == "call_method" and node.target == "bool" and len(node.args) == 1 and not node.kwargs:
            node.target, node.args = "to", (node.args[0], torch.bool)
            owner = next((u.meta.get("specc_path") for u in node.users if u.meta.get("specc_path")), node.name)
            notes.append(f"'{owner}': Tensor.bool() scripted as Tensor.to(torch.bool)")
    if notes:
        module.recompile()
    return notes


REWRITES: dict[str, list[Callable[[fx.GraphModule, list[torch.Tensor]], list[str]]]] = {
    "onnx": [sdpa_to_4d],
    "pt2": [max_pool1d_to_2d],
    "torchscript": [bool_as_to],
}


def for_format(fmt: str, module: fx.GraphModule, example: list[torch.Tensor]) -> tuple[fx.GraphModule, list[str]]:
    """The module a format's exporter sees: a copy with that exporter's gaps lowered away (the
    same module when nothing applies), and a note per rewrite."""
    copied = fx.GraphModule(module, copy.deepcopy(module.graph), module.__class__.__name__)
    copied.specc_output_names = getattr(module, "specc_output_names", [])
    notes = [note for rewrite in REWRITES.get(fmt, []) for note in rewrite(copied, example)]
    if not notes:
        return module, []
    copied.graph.lint()
    return copied, notes
