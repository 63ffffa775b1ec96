"""Loss impact: how much the mean token loss rises when one head alone is masked (L x H forward passes).

The exact measure the gradient score approximates. Each head is masked inside
`temporarily_masked`, measured, and restored; the model ends as it started, its pruning history
included. Slow on big models: report progress through `progress(done, total)`, and raise from it
to stop (the model is restored either way).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sentinel.metrics.batches import Batch, lm_loss_sum, model_device, prepare_batches
from sentinel.metrics.scores import HeadScores, active_grid
from sentinel.models.heads import model_heads
from sentinel.pruning.apply import temporarily_masked

ProgressCallback = Callable[[int, int], None]


def mean_loss(model: nn.Module, batches: list[Batch], causal: bool) -> float:
    """Mean token NLL over all batches (each predicted token weighs the same)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss, n = lm_loss_sum(model, batch, causal)
            total += float(loss)
            count += n
    return total / count


def loss_impact(model: nn.Module, data: Any, num_batches: int | None = None,
                progress: ProgressCallback | None = None) -> HeadScores:
    """loss(head masked) - loss(model as given), per active original head; NaN for pruned heads."""
    heads = model_heads(model)
    causal = heads.adapter.is_causal(model.config)
    batches = prepare_batches(data, num_batches, model_device(model))
    targets = active_grid(model).nonzero().tolist()
    values = torch.full((heads.num_layers, heads.num_heads), math.nan, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        base = mean_loss(model, batches, causal)
        for done, (layer, head) in enumerate(targets, start=1):
            with temporarily_masked(model, {"heads": {layer: [head]}}):
                values[layer, head] = mean_loss(model, batches, causal) - base
            if progress is not None:
                progress(done, len(targets))
    finally:
        model.train(was_training)
    return HeadScores("loss_impact", values, {"base_loss": base, "batches": len(batches)})
