"""GPT-NeoX / Pythia family: fused `query_key_value` laid out per head as [q | k | v], output `dense`;
MLP `dense_h_to_4h`/`dense_4h_to_h`."""

from __future__ import annotations

from typing import Any

from torch import nn

from sentinel.models.adapters.base import FamilyAdapter, FamilySpec, PartSpec, SliceSpec, UnitSpec


class GPTNeoXAdapter(FamilyAdapter):
    family = "gpt_neox"
    examples = "GPT-NeoX / Pythia (fused query_key_value, interleaved per head)"
    tested_model_types = ("gpt_neox",)
    mlp_output = "mlp.dense_4h_to_h"
    cache_kwarg = "layer_past"
    attention_path = "attention"
    output_path = "dense"

    def is_attention(self, m: nn.Module) -> bool:
        return (isinstance(getattr(m, "query_key_value", None), nn.Linear)
                and isinstance(getattr(m, "dense", None), nn.Linear) and hasattr(m, "head_size"))

    def spec(self, config: Any) -> FamilySpec:
        d = config.hidden_size // config.num_attention_heads
        head = UnitSpec("head", "attention",
                        (SliceSpec("query_key_value", "out", "head", d, ("q", "k", "v"), interleaved=True),
                         SliceSpec("dense", "in", "head", d, ("o",))),
                        gate="dense", gate_width=d)
        neuron = UnitSpec("neuron", "mlp", (SliceSpec("dense_h_to_4h", "out", "neuron", 1, ("up",)),
                                            SliceSpec("dense_4h_to_h", "in", "neuron", 1, ("down",))),
                          gate="dense_4h_to_h", gate_width=1)
        return FamilySpec("attention", {"head": head, "neuron": neuron},
                          (PartSpec("attention", "head", "attention.dense", "attention.dense"),
                           PartSpec("mlp", "neuron", "mlp.dense_4h_to_h", "mlp.dense_4h_to_h")))
