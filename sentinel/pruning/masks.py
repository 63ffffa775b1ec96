"""Reversible head masks: a per-head gate multiplied into the input of each layer's output projection.

That input still holds every head's output separately ([..., heads * head_dim]), so a gate of 0
removes a head's contribution exactly and stops its gradient; with no head masked the gate is
dropped altogether, so unmasking restores the original computation bit for bit.

Besides 0 (masked) and 1 (active), an active head may carry a fractional gate scale in (0, 1]
(`set_gate_scales`), used to fade a freshly grown head in. Masking wins over a scale; a scale of 1
removes it. The gates and the state they come from are owned by `sentinel.models.state`; these
functions validate plans and call it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from sentinel.errors import InvalidPruningPlan
from sentinel.models.state import ModelState, model_state
from sentinel.pruning.plan import HeadPlan, PlanLike, normalize_plan

logger = logging.getLogger(__name__)


def refresh_gates(heads: ModelState, layers: list[int] | None = None) -> None:
    """Rebuild the gates of `layers` (default all) from the model's pruning state."""
    heads.refresh_gates(layers)


def set_gate_scales(model: nn.Module, scales: Mapping[int, Mapping[int, float]], kind: str = "head") -> None:
    """Set fractional gates {layer: {unit: value in (0, 1]}} on present, unmasked units (1 clears the scale)."""
    state = model_state(model)
    clean: dict[int, dict[int, float]] = {}
    for layer, per_unit in scales.items():
        if not 0 <= int(layer) < state.num_layers:
            raise InvalidPruningPlan(f"Layer {layer} is out of range: this model has layers 0-{state.num_layers - 1}.")
        clean[int(layer)] = {int(u): float(v) for u, v in per_unit.items()}
    state.set_scales(kind, clean)


def gate_scales(model: nn.Module, kind: str = "head") -> dict[int, dict[int, float]]:
    """Fractional gate scales of present, unmasked units, {layer: {unit: value}} for layers that have any."""
    return model_state(model).scales(kind)


def mask_heads(model: nn.Module, plan: PlanLike) -> HeadPlan:
    """Switch heads off reversibly; returns the heads newly masked (original indices)."""
    state = model_state(model)
    newly = state.mask("head", normalize_plan(plan, state.num_layers, state.num_heads))
    state.record("mask", "head", newly)
    return newly


def unmask_heads(model: nn.Module, plan: PlanLike | None = None) -> HeadPlan:
    """Switch masked heads back on (all of them when `plan` is None); returns the heads unmasked."""
    state = model_state(model)
    wanted = None if plan is None else normalize_plan(plan, state.num_layers, state.num_heads)
    restored = state.unmask("head", wanted)
    state.record("unmask", "head", restored)
    return restored


def active_heads(model: nn.Module) -> HeadPlan:
    """Heads that are present and not masked, {layer: [original heads]} for every layer."""
    state = model_state(model)
    return {layer: state.active(layer) for layer in range(state.num_layers)}


def present_heads(model: nn.Module) -> HeadPlan:
    """Heads physically in the weights (masked or not), {layer: [original heads]}."""
    state = model_state(model)
    return {layer: state.present(layer) for layer in range(state.num_layers)}


def masked_heads(model: nn.Module) -> HeadPlan:
    """Heads present but gated off, {layer: [original heads]} for layers that have any."""
    state = model_state(model)
    return {layer: state.masked(layer) for layer in range(state.num_layers) if state.masked(layer)}


@contextmanager
def gradient_gates(model: nn.Module, kind: str = "head") -> Iterator[dict[int, torch.Tensor]]:
    """Temporarily put a gate that requires grad on every layer with present units of `kind` (default heads).

    Yields {layer: gate[present units]}; each gate holds 1 for active and 0 for masked units (a fading-in
    unit keeps its scale), so after `loss.backward()` `gate.grad[i]` is d loss / d gate of present unit i.
    The previous gates come back on exit.
    """
    with model_state(model).gradient_gates(kind) as gates:
        yield gates


def pruning_history(model: nn.Module) -> list[dict]:
    """What was done to the model's units, in order (mask, unmask, remove, grow), with original indices."""
    return model_state(model).state.history


def _record(model: nn.Module, op: str, plan: HeadPlan, note: dict | None = None, kind: str = "head") -> None:
    model_state(model).record(op, kind, plan, note)
