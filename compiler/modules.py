"""The few modules specc itself provides: a function that must know train from eval mode.

Eject copies their source into the generated file, so ejected code still imports only torch.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class ScaledDotProductAttention(nn.Module):
    """`F.scaled_dot_product_attention` whose dropout applies in training only (as nanoGPT's)."""

    def __init__(self, dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
                 enable_gqa: bool = False) -> None:
        super().__init__()
        self.dropout_p, self.is_causal, self.scale, self.enable_gqa = dropout_p, is_causal, scale, enable_gqa

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask,
                                              dropout_p=self.dropout_p if self.training else 0.0,
                                              is_causal=self.is_causal, scale=self.scale, enable_gqa=self.enable_gqa)
