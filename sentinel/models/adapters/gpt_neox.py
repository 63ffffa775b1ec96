"""GPT-NeoX / Pythia family: fused `query_key_value` laid out per head as [q | k | v], output `dense`."""

from __future__ import annotations

import torch
from torch import nn

from sentinel.models.adapters.base import (
    FamilyAdapter, bias_of, expand_in_features, expand_out_features, head_channels, head_range, in_cols,
    keep_in_features, keep_out_features, out_rows,
)
from sentinel.models.layout import HeadWeights


class GPTNeoXAdapter(FamilyAdapter):
    family = "gpt_neox"
    examples = "GPT-NeoX / Pythia (fused query_key_value, interleaved per head)"
    tested_model_types = ("gpt_neox",)
    mlp_output = "mlp.dense_4h_to_h"
    cache_kwarg = "layer_past"

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [
            m for m in model.modules()
            if isinstance(getattr(m, "query_key_value", None), nn.Linear)
            and isinstance(getattr(m, "dense", None), nn.Linear) and hasattr(m, "head_size")
        ]

    def output_projection(self, attn: nn.Module) -> nn.Module:
        return attn.dense

    def head_weights(self, attn: nn.Module, head: int, kv_head: int) -> HeadWeights:
        d = attn.head_size
        block = 3 * d * head
        q, k, v = slice(block, block + d), slice(block + d, block + 2 * d), slice(block + 2 * d, block + 3 * d)
        fused = attn.query_key_value
        return HeadWeights(
            q=out_rows(fused, q), k=out_rows(fused, k), v=out_rows(fused, v),
            o=in_cols(attn.dense, head_range(head, d)),
            q_bias=bias_of(fused, q), k_bias=bias_of(fused, k), v_bias=bias_of(fused, v),
        )

    def keep_heads(self, attn: nn.Module, heads: list[int], kv_heads: list[int]) -> None:
        d = attn.head_size
        keep_out_features(attn.query_key_value, head_channels(heads, 3 * d))
        keep_in_features(attn.dense, head_channels(heads, d))

    def insert_heads(self, attn: nn.Module, kept_at: list[int], kv_kept_at: list[int], num_heads: int,
                     num_kv_heads: int) -> None:
        d = attn.head_size
        expand_out_features(attn.query_key_value, num_heads * 3 * d, head_channels(kept_at, 3 * d))
        expand_in_features(attn.dense, num_heads * d, head_channels(kept_at, d))
