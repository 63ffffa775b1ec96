"""GPT-J family: q_proj/k_proj/v_proj + out_proj (no biases), MLP fc_in/fc_out, attention and MLP in parallel
from one layer norm.

Rotary embeddings turn the first `rotary_dim` channels of each head on their own, so slicing whole heads
keeps them exact; the attention reshapes by `head_dim` and keeps its head count in `num_attention_heads`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sentinel.models.adapters.base import AttrSpec, FamilyAdapter, FamilySpec, PartSpec, SliceSpec, UnitSpec
from sentinel.models.adapters.gpt2 import GPT2Adapter


class GPTJAdapter(FamilyAdapter):
    family = "gptj"
    examples = "GPT-J (q_proj/k_proj/v_proj + out_proj, parallel attention and MLP, partial rotary)"
    tested_model_types = ("gptj",)
    mlp_output = "mlp.fc_out"
    attention_path = "attn"
    output_path = "out_proj"

    def is_attention(self, m: nn.Module) -> bool:
        return (all(isinstance(getattr(m, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
                and hasattr(m, "rotary_dim") and hasattr(m, "num_attention_heads") and hasattr(m, "head_dim"))

    # GPT-J's config names its sizes as GPT-2's does (n_head, n_embd, n_inner)
    head_config = GPT2Adapter.head_config
    mlp_size = GPT2Adapter.mlp_size

    def spec(self, config: Any) -> FamilySpec:
        d = self.head_config(config)[2]
        head = UnitSpec("head", "attn",
                        (SliceSpec("q_proj", "out", "head", d, ("q",)), SliceSpec("k_proj", "out", "head", d, ("k",)),
                         SliceSpec("v_proj", "out", "head", d, ("v",)), SliceSpec("out_proj", "in", "head", d, ("o",))),
                        gate="out_proj", gate_width=d, attrs=(AttrSpec("", "num_attention_heads", "head"),))
        neuron = UnitSpec("neuron", "mlp", (SliceSpec("fc_in", "out", "neuron", 1, ("up",)),
                                            SliceSpec("fc_out", "in", "neuron", 1, ("down",))),
                          gate="fc_out", gate_width=1)
        return FamilySpec("attn", {"head": head, "neuron": neuron},
                          (PartSpec("attention", "head", "attn.out_proj", "attn.out_proj"),
                           PartSpec("mlp", "neuron", "mlp.fc_out", "mlp.fc_out")))
