"""OPT family: q_proj/k_proj/v_proj Linear layers and `out_proj`; the module tracks `num_heads`."""

from __future__ import annotations

from torch import nn

from sentinel.models.adapters.base import (
    FamilyAdapter, bias_of, expand_in_features, expand_out_features, head_channels, head_range, in_cols,
    keep_in_features, keep_out_features, out_rows,
)
from sentinel.models.layout import HeadWeights


class OPTAdapter(FamilyAdapter):
    family = "opt"
    examples = "OPT (q_proj/k_proj/v_proj + out_proj)"
    tested_model_types = ("opt",)
    mlp_output = "fc2"

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [
            m for m in model.modules()
            if all(isinstance(getattr(m, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
            and hasattr(m, "num_heads") and hasattr(m, "head_dim")
        ]

    def output_projection(self, attn: nn.Module) -> nn.Module:
        return attn.out_proj

    def head_weights(self, attn: nn.Module, head: int, kv_head: int) -> HeadWeights:
        r = head_range(head, attn.head_dim)
        return HeadWeights(
            q=out_rows(attn.q_proj, r), k=out_rows(attn.k_proj, r), v=out_rows(attn.v_proj, r),
            o=in_cols(attn.out_proj, r),
            q_bias=bias_of(attn.q_proj, r), k_bias=bias_of(attn.k_proj, r), v_bias=bias_of(attn.v_proj, r),
        )

    def keep_heads(self, attn: nn.Module, heads: list[int], kv_heads: list[int]) -> None:
        index = head_channels(heads, attn.head_dim)
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            keep_out_features(proj, index)
        keep_in_features(attn.out_proj, index)
        attn.num_heads = len(heads)

    def insert_heads(self, attn: nn.Module, kept_at: list[int], kv_kept_at: list[int], num_heads: int,
                     num_kv_heads: int) -> None:
        d = attn.head_dim
        index = head_channels(kept_at, d)
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            expand_out_features(proj, num_heads * d, index)
        expand_in_features(attn.out_proj, num_heads * d, index)
        attn.num_heads = num_heads
