"""Llama / Mistral / Qwen2 family: q_proj/k_proj/v_proj/o_proj with grouped-query attention; gate/up/down MLP.

Query heads h share key/value head h // group_size of the original model. Removal takes whole K/V
groups, or the same number of query heads from every group of a layer (`num_key_value_groups`
follows, so `repeat_kv` stays valid).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sentinel.models.adapters.base import AttrSpec, FamilyAdapter, FamilySpec, PartSpec, SliceSpec, UnitSpec


class LlamaAdapter(FamilyAdapter):
    family = "llama"
    examples = "Llama / Mistral / Qwen2 (q_proj/k_proj/v_proj/o_proj, grouped-query attention)"
    tested_model_types = ("llama", "mistral", "qwen2")
    mlp_output = "mlp.down_proj"
    attention_path = "self_attn"
    output_path = "o_proj"

    def is_attention(self, m: nn.Module) -> bool:
        return (all(isinstance(getattr(m, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
                and hasattr(m, "num_key_value_groups") and hasattr(m, "head_dim"))

    def removal_refusal(self, attn: nn.Module) -> str | None:
        head_dim = attn.head_dim
        for name in ("q_norm", "k_norm"):
            norm = getattr(attn, name, None)
            weight = getattr(norm, "weight", None)
            if weight is not None and weight.numel() != head_dim:
                # OLMo2: one RMSNorm over all heads' channels, so each head's output depends on the others'
                return (f"its {name} normalises all heads together ({weight.numel()} channels, not one head's "
                        f"{head_dim}), so removing heads changes the heads that stay")
        if getattr(attn, "qk_layernorm", False):
            return "its per-head q/k layer norms (qk_layernorm) are not sliced by head removal"
        return None

    def spec(self, config: Any) -> FamilySpec:
        d = self.head_config(config)[2]
        head = UnitSpec("head", "self_attn",
                        (SliceSpec("q_proj", "out", "head", d, ("q",)), SliceSpec("k_proj", "out", "kv", d, ("k",)),
                         SliceSpec("v_proj", "out", "kv", d, ("v",)), SliceSpec("o_proj", "in", "head", d, ("o",))),
                        gate="o_proj", gate_width=d,
                        attrs=(AttrSpec("", "num_key_value_groups", "head", per_space="kv"),
                               # StableLM keeps the counts on the module and reshapes with them
                               AttrSpec("", "num_heads", "head", optional=True),
                               AttrSpec("", "num_key_value_heads", "kv", optional=True)))
        neuron = UnitSpec("neuron", "mlp",
                          (SliceSpec("gate_proj", "out", "neuron", 1, ("gate",)),
                           SliceSpec("up_proj", "out", "neuron", 1, ("up",)),
                           SliceSpec("down_proj", "in", "neuron", 1, ("down",))),
                          gate="down_proj", gate_width=1, attrs=(AttrSpec("", "intermediate_size", "neuron"),))
        return FamilySpec("self_attn", {"head": head, "neuron": neuron},
                          (PartSpec("attention", "head", "self_attn.o_proj", "self_attn.o_proj"),
                           PartSpec("mlp", "neuron", "mlp.down_proj", "mlp.down_proj")))
