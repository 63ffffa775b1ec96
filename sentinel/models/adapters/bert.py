"""BERT / RoBERTa family: `self.query/key/value`, `output.dense`; MLP `intermediate.dense`/`output.dense`; post-LN."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sentinel.models.adapters.base import AttrSpec, FamilyAdapter, FamilySpec, PartSpec, SliceSpec, UnitSpec


class BertAdapter(FamilyAdapter):
    family = "bert"
    examples = "BERT / RoBERTa (query/key/value + output.dense)"
    tested_model_types = ("bert", "roberta")
    mlp_output = "output.dense"
    attention_path = "attention"
    output_path = "output.dense"
    emptied_path = "self"

    def is_attention(self, m: nn.Module) -> bool:
        inner, out = getattr(m, "self", None), getattr(m, "output", None)
        return all(isinstance(getattr(inner, n, None), nn.Linear) for n in ("query", "key", "value")) and isinstance(
            getattr(out, "dense", None), nn.Linear)

    def is_causal(self, config: Any) -> bool:
        return bool(getattr(config, "is_decoder", False))

    def spec(self, config: Any) -> FamilySpec:
        d = config.hidden_size // config.num_attention_heads
        head = UnitSpec("head", "attention",
                        (SliceSpec("self.query", "out", "head", d, ("q",)), SliceSpec("self.key", "out", "head", d, ("k",)),
                         SliceSpec("self.value", "out", "head", d, ("v",)),
                         SliceSpec("output.dense", "in", "head", d, ("o",))),
                        gate="output.dense", gate_width=d,
                        attrs=(AttrSpec("self", "num_attention_heads", "head"),
                               AttrSpec("self", "all_head_size", "head", d)))
        neuron = UnitSpec("neuron", "", (SliceSpec("intermediate.dense", "out", "neuron", 1, ("up",)),
                                         SliceSpec("output.dense", "in", "neuron", 1, ("down",))),
                          gate="output.dense", gate_width=1)
        # Post-LN: each part adds its residual inside its output module, then normalises.
        return FamilySpec("attention", {"head": head, "neuron": neuron},
                          (PartSpec("attention", "head", "attention.output", "attention.output.dense", residual_arg=1,
                                    norm="attention.output.LayerNorm"),
                           PartSpec("mlp", "neuron", "output", "output.dense", residual_arg=1, norm="output.LayerNorm")))

    def empty_output(self, attn: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        # The output projection lives outside `attn.self`; an empty context makes it yield its bias.
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
