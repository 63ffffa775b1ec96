"""Importance of layers: the whole block and its attention and MLP parts ([layers, 3] = block, attention, mlp).

- block_influence (ShortGPT): 1 - cos(x_in, x_out) between the hidden states entering and leaving a
  block, averaged over tokens; the attention part's column compares x_in with the stream after the
  attention part, the MLP part's column that stream with x_out. A block that barely turns the
  residual stream matters little.
- gradient: |d loss / d gate| of each part's output gate (`gradient_importance(kind="layer")`).
- loss_impact: loss with the part (or block) masked minus the loss as given — exact, 3 passes per layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sentinel.metrics.batches import model_device, prepare_batches
from sentinel.metrics.loss_impact import ProgressCallback, mean_loss
from sentinel.metrics.scores import LAYER_COLUMNS, UnitScores, active_grid
from sentinel.models.adapters.base import submodule
from sentinel.models.state import model_state
from sentinel.pruning.apply import temporarily_masked


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def block_influence(model: nn.Module, data: Any, num_batches: int | None = None) -> UnitScores:
    """Mean over tokens of 1 - cos(input, output) of each block and of its attention and MLP parts."""
    state = model_state(model)
    batches = prepare_batches(data, num_batches, model_device(model))
    active = active_grid(model, "layer")
    totals = torch.zeros(active.shape, dtype=torch.float64)
    tokens = 0
    seen: dict[int, dict[str, torch.Tensor]] = {}
    handles = []

    def block_pre(layer: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen.setdefault(layer, {})["in"] = (args[0] if args else kwargs["hidden_states"]).detach()
        return hook

    def block_post(layer: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            seen[layer]["out"] = _first(output).detach()
        return hook

    def attention_post(layer: int, residual: bool):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x_in = seen[layer]["in"]
            out = _first(output).detach().reshape(x_in.shape)
            seen[layer]["mid"] = out if residual else x_in + out
        return hook

    was_training = model.training
    model.eval()
    try:
        for layer in state.present_blocks():
            block = state.block(layer)
            handles.append(block.register_forward_pre_hook(block_pre(layer), with_kwargs=True))
            handles.append(block.register_forward_hook(block_post(layer)))
            part = state.spec.parts[0]
            if 0 in state.present(layer, "part"):
                handles.append(submodule(block, part.output).register_forward_hook(
                    attention_post(layer, part.residual_arg is not None)))
        with torch.no_grad():
            for batch in batches:
                seen.clear()
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
                tokens += batch["input_ids"].numel()
                for layer, h in seen.items():
                    x_in, x_out = h["in"].double(), h["out"].double()
                    mid = h.get("mid", x_in).double()
                    for column, (a, b) in enumerate(((x_in, x_out), (x_in, mid), (mid, x_out))):
                        totals[layer, column] += float((1 - F.cosine_similarity(a, b, dim=-1)).sum())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    values = (totals / tokens).masked_fill(~active, math.nan)
    return UnitScores("block_influence", values, {"tokens": tokens}, "layer")


def layer_loss_impact(model: nn.Module, data: Any, num_batches: int | None = None,
                      progress: ProgressCallback | None = None) -> UnitScores:
    """loss(block / part masked) - loss(model as given), per active block and part; NaN for pruned ones."""
    state = model_state(model)
    causal = state.adapter.is_causal(model.config)
    batches = prepare_batches(data, num_batches, model_device(model))
    active = active_grid(model, "layer")
    values = torch.full(active.shape, math.nan, dtype=torch.float64)
    targets = active.nonzero().tolist()
    was_training = model.training
    model.eval()
    try:
        base = mean_loss(model, batches, causal)
        for done, (layer, column) in enumerate(targets, start=1):
            with temporarily_masked(model, {"layers": {layer: [LAYER_COLUMNS[column]]}}):
                values[layer, column] = mean_loss(model, batches, causal) - base
            if progress is not None:
                progress(done, len(targets))
    finally:
        model.train(was_training)
    return UnitScores("loss_impact", values, {"base_loss": base, "batches": len(batches)}, "layer")
