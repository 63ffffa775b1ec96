"""Gradient importance (Michel et al., 2019): how strongly the loss reacts to scaling each head's output.

Each head's output is multiplied by a gate g_h = 1 (the engine's `gradient_gates`). For every
batch the loss is the SUM of the token NLLs (see `lm_loss_sum`), and |dL_batch / dg_h| is added
up; the total is divided by the number of predicted tokens over all batches. So the score is the
mean over tokens of the batch gradient's magnitude: with one sequence per batch, the per-sequence
|gradient| of Michel et al., averaged per token. A head whose output-projection slice is zero
cannot change the loss and gets exactly 0.

The same works for every unit kind (`kind`): neurons are gated at the input of the MLP's down
projection (a first-order Taylor estimate of removing the neuron), layers at the output of their
attention and MLP parts; a block's gate scales both parts, so its derivative is the sum of theirs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sentinel.metrics.batches import lm_loss_sum, model_device, prepare_batches
from sentinel.metrics.scores import UnitScores, active_grid
from sentinel.models.state import model_state


def normalize_per_layer(values: torch.Tensor) -> torch.Tensor:
    """Divide each layer's scores by their L2 norm over scored heads (NaN ignored; an all-zero layer stays 0)."""
    filled = torch.nan_to_num(values, nan=0.0)                     # [layers, heads]
    norms = filled.pow(2).sum(dim=1, keepdim=True).sqrt()          # [layers, 1]
    return values / torch.where(norms > 0, norms, torch.ones_like(norms))


def gradient_importance(model: nn.Module, data: Any, num_batches: int | None = None,
                        normalize_layers: bool = False, kind: str = "head") -> UnitScores:
    """Mean over predicted tokens of |d loss / d gate| per original unit of `kind`; NaN for pruned units.

    `normalize_layers` divides each layer by its L2 norm, as Michel et al. do before comparing layers.
    Parameters are frozen during the passes (only the gates need gradients) and restored after.
    """
    state = model_state(model)
    causal = state.adapter.is_causal(model.config)
    batches = prepare_batches(data, num_batches, model_device(model))
    active = active_grid(model, kind)
    totals = torch.zeros(active.shape, dtype=torch.float64)       # [layers, units]
    tokens = 0
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        for param, _ in frozen:
            param.requires_grad_(False)
        with state.gradient_gates("part" if kind == "layer" else kind) as gates:
            for batch in batches:
                loss, count = lm_loss_sum(model, batch, causal)
                loss.backward()
                for layer, gate in gates.items():
                    grad = gate.grad.detach().double().cpu()
                    if kind == "layer":
                        parts = torch.tensor(state.present(layer, "part"), dtype=torch.long)
                        totals[layer, 1 + parts] += grad.abs()
                        totals[layer, 0] += float(grad.sum().abs())
                    else:
                        present = torch.tensor(state.present(layer, kind), dtype=torch.long)
                        totals[layer, present] += grad.abs()
                    gate.grad = None
                tokens += count
    finally:
        for param, flag in frozen:
            param.requires_grad_(flag)
        model.train(was_training)
    values = (totals / tokens).masked_fill(~active, math.nan)
    if normalize_layers:
        values = normalize_per_layer(values)
    return UnitScores("gradient", values, {"batches": len(batches), "tokens": tokens,
                                           "normalize_layers": normalize_layers}, kind)
