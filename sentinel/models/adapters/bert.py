"""BERT / RoBERTa family: `self.query/key/value` Linear layers, output projection `output.dense`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sentinel.models.adapters.base import (
    FamilyAdapter, bias_of, expand_in_features, expand_out_features, head_channels, head_range, in_cols,
    keep_in_features, keep_out_features, out_rows,
)
from sentinel.models.layout import HeadWeights


class BertAdapter(FamilyAdapter):
    family = "bert"
    examples = "BERT / RoBERTa (query/key/value + output.dense)"
    tested_model_types = ("bert", "roberta")
    mlp_output = "output.dense"

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        found = []
        for m in model.modules():
            inner, out = getattr(m, "self", None), getattr(m, "output", None)
            if all(isinstance(getattr(inner, n, None), nn.Linear) for n in ("query", "key", "value")) and isinstance(
                getattr(out, "dense", None), nn.Linear
            ):
                found.append(m)
        return found

    def is_causal(self, config: Any) -> bool:
        return bool(getattr(config, "is_decoder", False))

    def output_projection(self, attn: nn.Module) -> nn.Module:
        return attn.output.dense

    def emptied_module(self, attn: nn.Module) -> nn.Module:
        return attn.self

    def empty_output(self, attn: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        # The output projection lives outside `attn.self`; an empty context makes it yield its bias.
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0)

    def head_weights(self, attn: nn.Module, head: int, kv_head: int) -> HeadWeights:
        s, d = attn.self, attn.self.attention_head_size
        r = head_range(head, d)
        return HeadWeights(
            q=out_rows(s.query, r), k=out_rows(s.key, r), v=out_rows(s.value, r),
            o=in_cols(attn.output.dense, r),
            q_bias=bias_of(s.query, r), k_bias=bias_of(s.key, r), v_bias=bias_of(s.value, r),
        )

    def keep_heads(self, attn: nn.Module, heads: list[int], kv_heads: list[int]) -> None:
        s, d = attn.self, attn.self.attention_head_size
        index = head_channels(heads, d)
        for proj in (s.query, s.key, s.value):
            keep_out_features(proj, index)
        keep_in_features(attn.output.dense, index)
        s.num_attention_heads = len(heads)
        s.all_head_size = len(heads) * d

    def insert_heads(self, attn: nn.Module, kept_at: list[int], kv_kept_at: list[int], num_heads: int,
                     num_kv_heads: int) -> None:
        s, d = attn.self, attn.self.attention_head_size
        index = head_channels(kept_at, d)
        for proj in (s.query, s.key, s.value):
            expand_out_features(proj, num_heads * d, index)
        expand_in_features(attn.output.dense, num_heads * d, index)
        s.num_attention_heads = num_heads
        s.all_head_size = num_heads * d
