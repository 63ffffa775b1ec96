"""The interface every architecture adapter implements, and the Linear/Conv1D slicing they share.

Orientation is handled here once: `nn.Linear` stores weight as (out, in), GPT-2's `Conv1D` as (in, out).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.models.layout import HeadWeights


def _out_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, Conv1D) else 0


def keep_out_features(module: nn.Module, index: torch.Tensor) -> None:
    """Keep only the output channels `index` of a Linear or Conv1D (weight and bias)."""
    dim = _out_dim(module)
    index = index.to(module.weight.device)
    module.weight = nn.Parameter(
        module.weight.detach().index_select(dim, index).contiguous(),
        requires_grad=module.weight.requires_grad,
    )
    if module.bias is not None:
        module.bias = nn.Parameter(
            module.bias.detach().index_select(0, index).contiguous(),
            requires_grad=module.bias.requires_grad,
        )
    if isinstance(module, Conv1D):
        module.nf = len(index)
    else:
        module.out_features = len(index)


def keep_in_features(module: nn.Module, index: torch.Tensor) -> None:
    """Keep only the input channels `index` of a Linear or Conv1D (the bias is per output, untouched)."""
    dim = 1 - _out_dim(module)
    index = index.to(module.weight.device)
    module.weight = nn.Parameter(
        module.weight.detach().index_select(dim, index).contiguous(),
        requires_grad=module.weight.requires_grad,
    )
    if isinstance(module, Conv1D):
        module.nx = len(index)
    else:
        module.in_features = len(index)


def expand_out_features(module: nn.Module, size: int, index: torch.Tensor) -> None:
    """Inverse of keep_out_features: grow to `size` output channels; the current ones land at `index`, new ones are 0."""
    dim = _out_dim(module)
    old = module.weight.detach()
    shape = list(old.shape)
    shape[dim] = size
    index = index.to(old.device)
    module.weight = nn.Parameter(old.new_zeros(shape).index_copy_(dim, index, old),
                                 requires_grad=module.weight.requires_grad)
    if module.bias is not None:
        module.bias = nn.Parameter(module.bias.detach().new_zeros(size).index_copy_(0, index, module.bias.detach()),
                                   requires_grad=module.bias.requires_grad)
    if isinstance(module, Conv1D):
        module.nf = size
    else:
        module.out_features = size


def expand_in_features(module: nn.Module, size: int, index: torch.Tensor) -> None:
    """Inverse of keep_in_features: grow to `size` input channels; the current ones land at `index`, new ones are 0."""
    dim = 1 - _out_dim(module)
    old = module.weight.detach()
    shape = list(old.shape)
    shape[dim] = size
    module.weight = nn.Parameter(old.new_zeros(shape).index_copy_(dim, index.to(old.device), old),
                                 requires_grad=module.weight.requires_grad)
    if isinstance(module, Conv1D):
        module.nx = size
    else:
        module.in_features = size


def out_rows(module: nn.Module, channels: slice) -> torch.Tensor:
    """View of output channels `channels` as (len, in_features)."""
    if isinstance(module, Conv1D):
        return module.weight[:, channels].T
    return module.weight[channels]


def in_cols(module: nn.Module, channels: slice) -> torch.Tensor:
    """View of input channels `channels` as (out_features, len)."""
    if isinstance(module, Conv1D):
        return module.weight[channels].T
    return module.weight[:, channels]


def bias_of(module: nn.Module, channels: slice) -> torch.Tensor | None:
    return None if module.bias is None else module.bias[channels]


def head_range(head: int, head_dim: int, offset: int = 0) -> slice:
    return slice(offset + head * head_dim, offset + (head + 1) * head_dim)


def head_channels(heads: list[int], head_dim: int, offset: int = 0) -> torch.Tensor:
    """Channel indices of the given local heads, in order, for a head-major [heads, head_dim] layout."""
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    base = torch.tensor(heads, dtype=torch.long)[:, None] * head_dim + offset
    return (base + torch.arange(head_dim)).flatten()


class FamilyAdapter(ABC):
    """One per architecture family: finds the attention modules and knows their head layout.

    Local head indices (positions among the heads a module holds now) are used here; the mapping
    to original indices is kept by `sentinel.pruning.masks`.
    """

    family: ClassVar[str]
    examples: ClassVar[str]
    tested_model_types: ClassVar[tuple[str, ...]]
    cache_kwarg: ClassVar[str] = "past_key_values"
    # The MLP output projection (down_proj / c_proj / fc2 / ...), as a path from the transformer block.
    mlp_output: ClassVar[str]

    @abstractmethod
    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        """Attention modules in layer order, or [] when the model does not have this family's layout."""

    @abstractmethod
    def output_projection(self, attn: nn.Module) -> nn.Module:
        """The projection whose input still holds each head's output separately."""

    @abstractmethod
    def head_weights(self, attn: nn.Module, head: int, kv_head: int) -> HeadWeights:
        """Views of local query head `head` (and its local key/value head `kv_head`)."""

    @abstractmethod
    def keep_heads(self, attn: nn.Module, heads: list[int], kv_heads: list[int]) -> None:
        """Physically keep only local query heads `heads` and local key/value heads `kv_heads`."""

    @abstractmethod
    def insert_heads(self, attn: nn.Module, kept_at: list[int], kv_kept_at: list[int], num_heads: int,
                     num_kv_heads: int) -> None:
        """Inverse of keep_heads: grow to `num_heads` query (`num_kv_heads` K/V) heads with zero weights,
        current local head i moving to slot kept_at[i] (K/V head j to kv_kept_at[j])."""

    def head_config(self, config: Any) -> tuple[int, int, int, int]:
        """(num_heads, num_kv_heads, head_dim, hidden_size) of the original model."""
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        hidden = config.hidden_size
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        return heads, kv_heads, head_dim, hidden

    def is_causal(self, config: Any) -> bool:
        return True

    def emptied_module(self, attn: nn.Module) -> nn.Module:
        """The module whose forward is replaced when a layer loses every head."""
        return attn

    def empty_output(self, attn: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """What an attention module with no heads returns: the output projection of nothing (its bias)."""
        proj = self.output_projection(attn)
        width = proj.nf if isinstance(proj, Conv1D) else proj.out_features
        out = hidden_states.new_zeros(*hidden_states.shape[:-1], width)
        return out if proj.bias is None else out + proj.bias
