"""TEST-ONLY stand-ins for issue #10's `remove_neurons` / `remove_layers`, which do not exist on this branch yet.

They cut a tiny model's MLP width and drop whole blocks directly, with no Sentinel bookkeeping, only so
that export and recovery (which read shapes from the modules) can be tested on neuron- and layer-pruned
shapes now. Replace them with #10's functions once it is merged; do not use them outside tests.
"""

from __future__ import annotations

import torch
from torch import nn

from sentinel.models.adapters.base import keep_in_features, keep_out_features
from sentinel.models.blocks import mlp_output_projection, model_blocks
from sentinel.models.heads import model_heads

# The projections that produce the MLP's intermediate channels, per family (the output projection comes
# from the adapter's `mlp_output`).
MLP_INPUTS = {
    "gpt2": ("mlp.c_fc",), "opt": ("fc1",), "bert": ("intermediate.dense",),
    "gpt_neox": ("mlp.dense_h_to_4h",), "llama": ("mlp.gate_proj", "mlp.up_proj"),
}


def standin_slice_mlp(model: nn.Module, keep: dict[int, list[int]]) -> None:
    """Stand-in for #10's remove_neurons: keep only the MLP channels `keep[block]` of each listed block."""
    heads = model_heads(model)
    blocks = model_blocks(model, heads)
    with torch.no_grad():
        for index, channels in keep.items():
            kept = torch.tensor(channels, dtype=torch.long)
            for path in MLP_INPUTS[heads.adapter.family]:
                keep_out_features(blocks[index].get_submodule(path), kept)
            keep_in_features(mlp_output_projection(heads, blocks[index]), kept)


def standin_drop_blocks(model: nn.Module, drop: list[int]) -> None:
    """Stand-in for #10's remove_layers: take whole blocks out of the model's block list."""
    heads = model_heads(model)
    blocks = model_blocks(model, heads)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == len(blocks) and module[0] is blocks[0]:
            kept = [b for i, b in enumerate(blocks) if i not in drop]
            for _ in range(len(module)):
                del module[0]
            module.extend(kept)
            return
    raise AssertionError("block list not found")
