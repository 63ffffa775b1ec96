"""Binds a model to its adapter and keeps each layer's head bookkeeping in original indices.

Each attention module carries two plain attributes, so copies (`copy.deepcopy`) carry them too:
`sentinel_present` (original heads physically present) and `sentinel_masked` (present but gated off).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sentinel.models.adapters import FamilyAdapter, find_adapter
from sentinel.models.layout import HeadLayout, HeadWeights


@dataclass
class ModelHeads:
    """A model seen through its adapter: attention modules and their head state, layer by layer."""

    model: nn.Module
    adapter: FamilyAdapter
    modules: list[nn.Module]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int

    @property
    def num_layers(self) -> int:
        return len(self.modules)

    @property
    def kv_group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def present(self, layer: int) -> list[int]:
        attn = self.modules[layer]
        if not hasattr(attn, "sentinel_present"):
            attn.sentinel_present = list(range(self.num_heads))
        return attn.sentinel_present

    def present_kv(self, layer: int) -> list[int]:
        """Original key/value heads still present in a layer (whole groups are removed together)."""
        return sorted({h // self.kv_group_size for h in self.present(layer)})

    def masked(self, layer: int) -> list[int]:
        attn = self.modules[layer]
        if not hasattr(attn, "sentinel_masked"):
            attn.sentinel_masked = []
        return attn.sentinel_masked

    def local_index(self, layer: int, head: int) -> int:
        return self.present(layer).index(head)

    def head_weights(self, layer: int, head: int) -> HeadWeights:
        """Views of original head `head` of `layer`; the head must be physically present."""
        kv_local = self.present_kv(layer).index(head // self.kv_group_size)
        return self.adapter.head_weights(self.modules[layer], self.local_index(layer, head), kv_local)

    def layout(self) -> HeadLayout:
        config = self.model.config
        return HeadLayout(
            family=self.adapter.family,
            model_type=getattr(config, "model_type", "?"),
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_size=self.hidden_size,
            is_causal=self.adapter.is_causal(config),
            present=tuple(tuple(self.present(layer)) for layer in range(self.num_layers)),
        )


def model_heads(model: nn.Module) -> ModelHeads:
    """Find the model's adapter and attention modules (raises UnsupportedModelError)."""
    adapter, modules = find_adapter(model)
    heads, kv_heads, head_dim, hidden = adapter.head_config(model.config)
    return ModelHeads(model, adapter, modules, heads, kv_heads, head_dim, hidden)


def get_layout(model: nn.Module) -> HeadLayout:
    """The model's HeadLayout: family, original head counts, and which heads are present now."""
    return model_heads(model).layout()
