"""Transformer blocks and their projections, found from module structure (never from class names).

The blocks are the ones the model's pruning state (sentinel.models.state) knows; a block's MLP output
projection is named by the family adapter's `mlp_output` path. Export and recovery both read shapes
and projections through here, so they work for whatever pruning produced those shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.errors import UnsupportedModelError
from sentinel.models.heads import ModelHeads, model_heads


def in_features(module: nn.Module) -> int:
    """Input width of a Linear or Conv1D (Conv1D stores its weight as (in, out))."""
    return module.weight.shape[0] if isinstance(module, Conv1D) else module.weight.shape[1]


def model_blocks(model: nn.Module, heads: ModelHeads | None = None) -> list[nn.Module]:
    """The transformer blocks still in the model, in order (the pruning state's own block list)."""
    heads = heads or model_heads(model)
    return list(heads.blocks)


def mlp_output_projection(heads: ModelHeads, block: nn.Module) -> nn.Module:
    """The block's MLP output projection (down_proj / c_proj / fc2 / dense_4h_to_h / output.dense)."""
    try:
        return block.get_submodule(heads.adapter.mlp_output)
    except AttributeError:
        raise UnsupportedModelError(
            f"{type(block).__name__} has no {heads.adapter.mlp_output!r}, the MLP output projection the "
            f"{heads.adapter.family} adapter expects."
        ) from None


@dataclass(frozen=True)
class BlockShape:
    """What one block physically holds now: query heads, key/value heads and MLP width; `layer` is its original index."""

    heads: int
    kv_heads: int
    mlp_width: int
    layer: int


def block_shapes(model: nn.Module) -> list[BlockShape]:
    """The physical shape of every block still in the model, in order (masked units count: they are in the weights)."""
    heads = model_heads(model)
    return [
        BlockShape(len(heads.present(layer)), len(heads.present_kv(layer)),
                   in_features(mlp_output_projection(heads, heads.block(layer))), layer)
        for layer in heads.present_blocks()
    ]
