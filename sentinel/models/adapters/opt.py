"""OPT family: q_proj/k_proj/v_proj + `out_proj` (the module tracks `num_heads`); MLP `fc1`/`fc2` in the layer."""

from __future__ import annotations

from typing import Any

from torch import nn

from sentinel.models.adapters.base import AttrSpec, FamilyAdapter, FamilySpec, PartSpec, SliceSpec, UnitSpec


class OPTAdapter(FamilyAdapter):
    family = "opt"
    examples = "OPT (q_proj/k_proj/v_proj + out_proj)"
    tested_model_types = ("opt",)
    mlp_output = "fc2"
    attention_path = "self_attn"
    output_path = "out_proj"

    def is_attention(self, m: nn.Module) -> bool:
        return (all(isinstance(getattr(m, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
                and hasattr(m, "num_heads") and hasattr(m, "head_dim"))

    def mlp_size(self, config: Any) -> int:
        return config.ffn_dim

    def spec(self, config: Any) -> FamilySpec:
        d = config.hidden_size // config.num_attention_heads
        head = UnitSpec("head", "self_attn",
                        (SliceSpec("q_proj", "out", "head", d, ("q",)), SliceSpec("k_proj", "out", "head", d, ("k",)),
                         SliceSpec("v_proj", "out", "head", d, ("v",)), SliceSpec("out_proj", "in", "head", d, ("o",))),
                        gate="out_proj", gate_width=d, attrs=(AttrSpec("", "num_heads", "head"),))
        neuron = UnitSpec("neuron", "", (SliceSpec("fc1", "out", "neuron", 1, ("up",)),
                                         SliceSpec("fc2", "in", "neuron", 1, ("down",))),
                          gate="fc2", gate_width=1)
        return FamilySpec("self_attn", {"head": head, "neuron": neuron},
                          (PartSpec("attention", "head", "self_attn.out_proj", "self_attn.out_proj"),
                           PartSpec("mlp", "neuron", "fc2", "fc2")))
