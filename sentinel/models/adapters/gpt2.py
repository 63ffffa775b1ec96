"""GPT-2 family: fused `c_attn` producing [Q | K | V], `c_proj`; MLP `c_fc`/`c_proj`; all Conv1D with (in, out) weights."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.models.adapters.base import AttrSpec, FamilyAdapter, FamilySpec, PartSpec, SliceSpec, UnitSpec


class GPT2Adapter(FamilyAdapter):
    family = "gpt2"
    examples = "GPT-2 / DistilGPT2 (fused c_attn, Conv1D)"
    tested_model_types = ("gpt2",)
    mlp_output = "mlp.c_proj"
    attention_path = "attn"
    output_path = "c_proj"

    def is_attention(self, m: nn.Module) -> bool:
        return (isinstance(getattr(m, "c_attn", None), Conv1D) and isinstance(getattr(m, "c_proj", None), Conv1D)
                and hasattr(m, "split_size") and not getattr(m, "is_cross_attention", False))

    def head_config(self, config: Any) -> tuple[int, int, int, int]:
        heads, hidden = config.n_head, config.n_embd
        return heads, heads, hidden // heads, hidden

    def mlp_size(self, config: Any) -> int:
        return config.n_inner or 4 * config.n_embd

    def spec(self, config: Any) -> FamilySpec:
        d = config.n_embd // config.n_head
        head = UnitSpec("head", "attn", (SliceSpec("c_attn", "out", "head", d, ("q", "k", "v")),
                                         SliceSpec("c_proj", "in", "head", d, ("o",))),
                        gate="c_proj", gate_width=d,
                        attrs=(AttrSpec("", "num_heads", "head"), AttrSpec("", "split_size", "head", d)))
        neuron = UnitSpec("neuron", "mlp", (SliceSpec("c_fc", "out", "neuron", 1, ("up",)),
                                            SliceSpec("c_proj", "in", "neuron", 1, ("down",))),
                          gate="c_proj", gate_width=1)
        return FamilySpec("attn", {"head": head, "neuron": neuron},
                          (PartSpec("attention", "head", "attn.c_proj", "attn.c_proj"),
                           PartSpec("mlp", "neuron", "mlp.c_proj", "mlp.c_proj")))
