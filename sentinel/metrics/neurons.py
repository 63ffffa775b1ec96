"""Importance of MLP neurons (one intermediate channel each), over original (layer, neuron) indices; NaN if pruned.

- magnitude: sum of the Frobenius norms of the neuron's own weights — its input rows (up, and gate for
  gated MLPs) and its output column (down); biases excluded, as for heads.
- activation: mean |a| of the neuron's activation a (the input of the down projection, after the
  non-linearity and, for gated MLPs, the gate product) over every token of the calibration text.
- wanda: Wanda-style |W| x ||X||, summed over the neuron's weights: each input-row weight W_j times the
  L2 norm over tokens of input channel j of its projection, each output-column weight times ||a||.
- gradient / random: see `gradient_importance(kind="neuron")` and `random_scores(kind="neuron")`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sentinel.metrics.batches import model_device, prepare_batches
from sentinel.metrics.scores import UnitScores, active_grid
from sentinel.models.adapters.base import in_cols, out_rows, submodule
from sentinel.models.state import ModelState, model_state


def neuron_magnitude(model: nn.Module) -> UnitScores:
    """Sum of the Frobenius norms of each active neuron's input rows and output column (one layer at a time)."""
    state = model_state(model)
    active = active_grid(model, "neuron")
    values = torch.full(active.shape, math.nan, dtype=torch.float64)
    spec = state.spec.units["neuron"]
    with torch.no_grad():
        for layer in state.present_blocks():
            present = state.present(layer, "neuron")
            if not present:
                continue
            root = state.unit_root(layer, "neuron")
            total = torch.zeros(len(present), dtype=torch.float64)
            for s in spec.slices:                     # one channel per neuron: rows (out axis) or columns (in axis)
                module = submodule(root, s.path)
                if s.axis == "out":
                    total += out_rows(module, slice(None)).double().norm(dim=1).cpu()
                else:
                    total += in_cols(module, slice(None)).double().norm(dim=0).cpu()
            values[layer, present] = total
    return UnitScores("magnitude", values.masked_fill(~active, math.nan), {}, "neuron")


@contextmanager
def _input_norms(state: ModelState) -> Iterator[dict[tuple[int, str], torch.Tensor]]:
    """While active, accumulate per input channel the sums over tokens of x^2 and of |x| for every neuron
    slice's projection. Keys are (layer, slice path) and (layer, slice path, "abs"); values [in_features] float64.
    """
    sums: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    spec = state.spec.units["neuron"]

    def hook_for(key: tuple[int, str]):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()       # [tokens, in]
            sums[key] = sums.get(key, 0) + (x * x).sum(dim=0).cpu()
            sums[(*key, "abs")] = sums.get((*key, "abs"), 0) + x.abs().sum(dim=0).cpu()
        return hook

    try:
        for layer in state.present_blocks():
            root = state.unit_root(layer, "neuron")
            for s in spec.slices:
                handles.append(submodule(root, s.path).register_forward_pre_hook(hook_for((layer, s.path))))
        yield sums
    finally:
        for handle in handles:
            handle.remove()


def _collect(model: nn.Module, data: Any, num_batches: int | None) -> tuple[ModelState, dict, int]:
    state = model_state(model)
    batches = prepare_batches(data, num_batches, model_device(model))
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        with _input_norms(state) as sums, torch.no_grad():
            for batch in batches:
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
                tokens += batch["input_ids"].numel()
    finally:
        model.train(was_training)
    return state, sums, tokens


def neuron_activation(model: nn.Module, data: Any, num_batches: int | None = None) -> UnitScores:
    """Mean |activation| of each active neuron over all tokens of `data`."""
    state, sums, tokens = _collect(model, data, num_batches)
    down = next(s for s in state.spec.units["neuron"].slices if s.axis == "in")
    active = active_grid(model, "neuron")
    values = torch.full(active.shape, math.nan, dtype=torch.float64)
    for layer in state.present_blocks():
        present = state.present(layer, "neuron")
        if not present:
            continue
        values[layer, present] = sums[(layer, down.path, "abs")] / tokens      # [present neurons]
    return UnitScores("activation", values.masked_fill(~active, math.nan), {"tokens": tokens}, "neuron")


def neuron_wanda(model: nn.Module, data: Any, num_batches: int | None = None) -> UnitScores:
    """Sum over each active neuron's weights of |W| x ||X|| (input-channel L2 norm over the tokens of `data`)."""
    state, sums, tokens = _collect(model, data, num_batches)
    spec = state.spec.units["neuron"]
    active = active_grid(model, "neuron")
    values = torch.full(active.shape, math.nan, dtype=torch.float64)
    with torch.no_grad():
        for layer in state.present_blocks():
            present = state.present(layer, "neuron")
            root = state.unit_root(layer, "neuron")
            total = torch.zeros(len(present), dtype=torch.float64)
            for s in spec.slices:
                norms = sums[(layer, s.path)].sqrt()                          # [in_features]
                weight = submodule(root, s.path).weight.detach().double().cpu()
                if isinstance(submodule(root, s.path), nn.Linear):
                    weight = weight.T                                         # -> [in, out] as Conv1D stores it
                if s.axis == "out":                                           # rows: |W[j, n]| * ||X_j||, sum over j
                    total += (weight.abs() * norms[:, None]).sum(dim=0)
                else:                                                         # column n: |W[n, i]| * ||a_n||
                    total += weight.abs().sum(dim=1) * norms
            values[layer, present] = total
    return UnitScores("wanda", values.masked_fill(~active, math.nan), {"tokens": tokens}, "neuron")
