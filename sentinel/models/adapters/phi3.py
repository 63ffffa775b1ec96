"""Phi-3 family: fused qkv_proj rows [q heads | k heads | v heads], o_proj; fused gate_up_proj [gate | up], down_proj.

Grouped-query attention as in Llama. Phi-3's attention reads its query width from the (shared) config,
so each pruned attention module gets a config copy of its own holding its head count.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sentinel.models.adapters.base import AttrSpec, FamilyAdapter, FamilySpec, PartSpec, SliceSpec, UnitSpec


class Phi3Adapter(FamilyAdapter):
    family = "phi3"
    examples = "Phi-3 / Phi-4-mini (fused qkv_proj and gate_up_proj, grouped-query attention)"
    tested_model_types = ("phi3",)
    mlp_output = "mlp.down_proj"
    attention_path = "self_attn"
    output_path = "o_proj"

    def is_attention(self, m: nn.Module) -> bool:
        return (all(isinstance(getattr(m, n, None), nn.Linear) for n in ("qkv_proj", "o_proj"))
                and hasattr(m, "num_key_value_groups") and hasattr(m, "head_dim"))

    def spec(self, config: Any) -> FamilySpec:
        d = self.head_config(config)[2]
        head = UnitSpec("head", "self_attn",
                        (SliceSpec("qkv_proj", "out", "head", d, ("q", "k", "v"), role_spaces=("head", "kv", "kv")),
                         SliceSpec("o_proj", "in", "head", d, ("o",))),
                        gate="o_proj", gate_width=d,
                        attrs=(AttrSpec("", "num_key_value_groups", "head", per_space="kv"),
                               AttrSpec("", "num_key_value_heads", "kv"),
                               AttrSpec("", "config.num_attention_heads", "head")))
        neuron = UnitSpec("neuron", "mlp",
                          (SliceSpec("gate_up_proj", "out", "neuron", 1, ("gate", "up")),
                           SliceSpec("down_proj", "in", "neuron", 1, ("down",))),
                          gate="down_proj", gate_width=1)
        return FamilySpec("self_attn", {"head": head, "neuron": neuron},
                          (PartSpec("attention", "head", "self_attn.o_proj", "self_attn.o_proj"),
                           PartSpec("mlp", "neuron", "mlp.down_proj", "mlp.down_proj")))
