"""GPT-2 family: fused `c_attn` producing [Q | K | V], `c_proj`; both are Conv1D with (in, out) weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.models.adapters.base import (
    FamilyAdapter, bias_of, expand_in_features, expand_out_features, head_channels, head_range, in_cols,
    keep_in_features, keep_out_features, out_rows,
)
from sentinel.models.layout import HeadWeights


class GPT2Adapter(FamilyAdapter):
    family = "gpt2"
    examples = "GPT-2 / DistilGPT2 (fused c_attn, Conv1D)"
    tested_model_types = ("gpt2",)
    mlp_output = "mlp.c_proj"

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [
            m for m in model.modules()
            if isinstance(getattr(m, "c_attn", None), Conv1D) and isinstance(getattr(m, "c_proj", None), Conv1D)
            and hasattr(m, "split_size") and not getattr(m, "is_cross_attention", False)
        ]

    def head_config(self, config: Any) -> tuple[int, int, int, int]:
        heads, hidden = config.n_head, config.n_embd
        return heads, heads, hidden // heads, hidden

    def output_projection(self, attn: nn.Module) -> nn.Module:
        return attn.c_proj

    def _present(self, attn: nn.Module) -> int:
        return attn.split_size // attn.head_dim

    def head_weights(self, attn: nn.Module, head: int, kv_head: int) -> HeadWeights:
        d, width = attn.head_dim, attn.split_size
        q, k, v = head_range(head, d), head_range(head, d, width), head_range(head, d, 2 * width)
        return HeadWeights(
            q=out_rows(attn.c_attn, q), k=out_rows(attn.c_attn, k), v=out_rows(attn.c_attn, v),
            o=in_cols(attn.c_proj, head_range(head, d)),
            q_bias=bias_of(attn.c_attn, q), k_bias=bias_of(attn.c_attn, k), v_bias=bias_of(attn.c_attn, v),
        )

    def keep_heads(self, attn: nn.Module, heads: list[int], kv_heads: list[int]) -> None:
        d, width = attn.head_dim, attn.split_size
        fused = [head_channels(heads, d, offset) for offset in (0, width, 2 * width)]
        keep_out_features(attn.c_attn, torch.cat(fused))
        keep_in_features(attn.c_proj, head_channels(heads, d))
        attn.num_heads = len(heads)
        attn.split_size = len(heads) * d

    def insert_heads(self, attn: nn.Module, kept_at: list[int], kv_kept_at: list[int], num_heads: int,
                     num_kv_heads: int) -> None:
        d, width = attn.head_dim, num_heads * attn.head_dim
        fused = [head_channels(kept_at, d, offset) for offset in (0, width, 2 * width)]
        expand_out_features(attn.c_attn, 3 * width, torch.cat(fused))
        expand_in_features(attn.c_proj, width, head_channels(kept_at, d))
        attn.num_heads = num_heads
        attn.split_size = width
