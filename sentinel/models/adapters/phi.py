"""Phi family (phi-1, phi-1.5, phi-2): q_proj/k_proj/v_proj + dense, MLP fc1/fc2, attention and MLP in parallel
from one layer norm.

Grouped-query attention as in Llama. Partial rotary (`partial_rotary_factor`) turns the first channels of each
head on their own, and the optional `qk_layernorm` is one LayerNorm of one head's width applied to every head
alike, so slicing whole heads keeps both exact.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sentinel.models.adapters.base import AttrSpec, FamilyAdapter, FamilySpec, PartSpec, SliceSpec, UnitSpec


class PhiAdapter(FamilyAdapter):
    family = "phi"
    examples = "Phi-1 / Phi-1.5 / Phi-2 (q_proj/k_proj/v_proj + dense, parallel attention and MLP)"
    tested_model_types = ("phi",)
    mlp_output = "mlp.fc2"
    attention_path = "self_attn"
    output_path = "dense"

    def is_attention(self, m: nn.Module) -> bool:
        return (all(isinstance(getattr(m, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "dense"))
                and hasattr(m, "num_key_value_groups") and hasattr(m, "head_dim") and hasattr(m, "rotary_ndims"))

    def spec(self, config: Any) -> FamilySpec:
        d = self.head_config(config)[2]
        head = UnitSpec("head", "self_attn",
                        (SliceSpec("q_proj", "out", "head", d, ("q",)), SliceSpec("k_proj", "out", "kv", d, ("k",)),
                         SliceSpec("v_proj", "out", "kv", d, ("v",)), SliceSpec("dense", "in", "head", d, ("o",))),
                        gate="dense", gate_width=d,
                        attrs=(AttrSpec("", "num_key_value_groups", "head", per_space="kv"),))
        neuron = UnitSpec("neuron", "mlp", (SliceSpec("fc1", "out", "neuron", 1, ("up",)),
                                            SliceSpec("fc2", "in", "neuron", 1, ("down",))),
                          gate="fc2", gate_width=1)
        return FamilySpec("self_attn", {"head": head, "neuron": neuron},
                          (PartSpec("attention", "head", "self_attn.dense", "self_attn.dense"),
                           PartSpec("mlp", "neuron", "mlp.fc2", "mlp.fc2")))
