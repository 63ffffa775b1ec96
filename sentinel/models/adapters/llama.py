"""Llama / Mistral / Qwen2 family: q_proj/k_proj/v_proj/o_proj, with grouped-query attention.

Query heads h share key/value head h // group_size; the group size stays fixed because removal
only ever takes whole groups.
"""

from __future__ import annotations

from torch import nn

from sentinel.models.adapters.base import (
    FamilyAdapter, bias_of, expand_in_features, expand_out_features, head_channels, head_range, in_cols,
    keep_in_features, keep_out_features, out_rows,
)
from sentinel.models.layout import HeadWeights


class LlamaAdapter(FamilyAdapter):
    family = "llama"
    examples = "Llama / Mistral / Qwen2 (q_proj/k_proj/v_proj/o_proj, grouped-query attention)"
    tested_model_types = ("llama", "mistral", "qwen2")
    mlp_output = "mlp.down_proj"

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [
            m for m in model.modules()
            if all(isinstance(getattr(m, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and hasattr(m, "num_key_value_groups") and hasattr(m, "head_dim")
        ]

    def output_projection(self, attn: nn.Module) -> nn.Module:
        return attn.o_proj

    def head_weights(self, attn: nn.Module, head: int, kv_head: int) -> HeadWeights:
        d = attn.head_dim
        q, kv = head_range(head, d), head_range(kv_head, d)
        return HeadWeights(
            q=out_rows(attn.q_proj, q), k=out_rows(attn.k_proj, kv), v=out_rows(attn.v_proj, kv),
            o=in_cols(attn.o_proj, q),
            q_bias=bias_of(attn.q_proj, q), k_bias=bias_of(attn.k_proj, kv), v_bias=bias_of(attn.v_proj, kv),
        )

    def keep_heads(self, attn: nn.Module, heads: list[int], kv_heads: list[int]) -> None:
        d = attn.head_dim
        keep_out_features(attn.q_proj, head_channels(heads, d))
        keep_out_features(attn.k_proj, head_channels(kv_heads, d))
        keep_out_features(attn.v_proj, head_channels(kv_heads, d))
        keep_in_features(attn.o_proj, head_channels(heads, d))

    def insert_heads(self, attn: nn.Module, kept_at: list[int], kv_kept_at: list[int], num_heads: int,
                     num_kv_heads: int) -> None:
        d = attn.head_dim
        expand_out_features(attn.q_proj, num_heads * d, head_channels(kept_at, d))
        expand_out_features(attn.k_proj, num_kv_heads * d, head_channels(kv_kept_at, d))
        expand_out_features(attn.v_proj, num_kv_heads * d, head_channels(kv_kept_at, d))
        expand_in_features(attn.o_proj, num_heads * d, head_channels(kept_at, d))
