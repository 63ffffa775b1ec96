"""Falcon family: one fused `query_key_value` + `dense`, MLP dense_h_to_4h/dense_4h_to_h.

The fused rows come in one of three layouts, named by the config:
- `new_decoder_architecture` (Falcon-40B/180B, Falcon 2): per K/V group its query heads, then its k and v;
- `multi_query` (Falcon-7B): [q heads | one k | one v], every query head sharing the one K/V head;
- neither: [q k v] interleaved per head (no grouping).
Removal keeps every K/V group with the same number of query heads (as in Llama), so the grouped layout stays
one the module can split. ALiBi models get their position bias for all heads at once from the model, so a
layer cannot lose some of its heads there.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sentinel.models.adapters.base import AttrSpec, FamilyAdapter, FamilySpec, PartSpec, SliceSpec, UnitSpec


class FalconAdapter(FamilyAdapter):
    family = "falcon"
    examples = "Falcon (fused query_key_value: multi-query, grouped new decoder, or per head)"
    tested_model_types = ("falcon",)
    mlp_output = "mlp.dense_4h_to_h"
    cache_kwarg = "layer_past"
    attention_path = "self_attention"
    output_path = "dense"

    def is_attention(self, m: nn.Module) -> bool:
        return (isinstance(getattr(m, "query_key_value", None), nn.Linear)
                and isinstance(getattr(m, "dense", None), nn.Linear)
                and all(hasattr(m, n) for n in ("num_kv_heads", "num_key_value_groups", "head_dim", "multi_query")))

    def removal_refusal(self, attn: nn.Module) -> str | None:
        if getattr(attn.config, "alibi", False):
            return ("its ALiBi position biases are built for all the model's heads at once (config.alibi), not per "
                    "layer, so a layer with fewer heads would get the wrong ones")
        return None

    def mlp_size(self, config: Any) -> int:
        return config.ffn_hidden_size

    def spec(self, config: Any) -> FamilySpec:
        d = self.head_config(config)[2]
        if config.new_decoder_architecture:
            fused = SliceSpec("query_key_value", "out", "head", d, ("q", "k", "v"), role_spaces=("head", "kv", "kv"),
                              grouped=True)
        elif config.multi_query:
            fused = SliceSpec("query_key_value", "out", "head", d, ("q", "k", "v"), role_spaces=("head", "kv", "kv"))
        else:
            fused = SliceSpec("query_key_value", "out", "head", d, ("q", "k", "v"), interleaved=True)
        head = UnitSpec("head", "self_attention", (fused, SliceSpec("dense", "in", "head", d, ("o",))),
                        gate="dense", gate_width=d,
                        attrs=(AttrSpec("", "num_heads", "head"), AttrSpec("", "num_kv_heads", "kv"),
                               AttrSpec("", "num_key_value_groups", "head", per_space="kv")))
        neuron = UnitSpec("neuron", "mlp", (SliceSpec("dense_h_to_4h", "out", "neuron", 1, ("up",)),
                                            SliceSpec("dense_4h_to_h", "in", "neuron", 1, ("down",))),
                          gate="dense_4h_to_h", gate_width=1)
        return FamilySpec("self_attention", {"head": head, "neuron": neuron},
                          (PartSpec("attention", "head", "self_attention.dense", "self_attention.dense"),
                           PartSpec("mlp", "neuron", "mlp.dense_4h_to_h", "mlp.dense_4h_to_h")))
