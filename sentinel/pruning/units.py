"""Neurons and layers, beside heads: mask, unmask, remove and list them by original index.

A neuron is one MLP intermediate channel (its input rows and output column go together). A layer
unit is a block's attention part, its MLP part, or the whole block; a masked or removed part lets
the residual pass through it, and a removed block leaves the model (the KV cache still lines up).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from sentinel.errors import InvalidPruningPlan
from sentinel.models.adapters.base import PART_NAMES
from sentinel.models.state import ModelState, model_state
from sentinel.pruning.plan import LAYER_PARTS, LayerPlan, NeuronPlan, PlanLike, normalize_layers, normalize_plan


def _neurons(state: ModelState, plan: PlanLike) -> NeuronPlan:
    return normalize_plan(plan, state.num_layers, state.num_neurons, "neuron")


def mask_neurons(model: nn.Module, plan: PlanLike) -> NeuronPlan:
    """Switch MLP neurons off reversibly ({layer: [neurons]}); returns those newly masked."""
    state = model_state(model)
    done = state.mask("neuron", _neurons(state, plan))
    state.record("mask", "neuron", done)
    return done


def unmask_neurons(model: nn.Module, plan: PlanLike | None = None) -> NeuronPlan:
    """Switch masked neurons back on (all when `plan` is None); returns those unmasked."""
    state = model_state(model)
    done = state.unmask("neuron", None if plan is None else _neurons(state, plan))
    state.record("unmask", "neuron", done)
    return done


def remove_neurons(model: nn.Module, plan: PlanLike, note: dict | None = None) -> NeuronPlan:
    """Cut neurons out of the MLP weights (original indices); returns those removed."""
    state = model_state(model)
    done = state.remove("neuron", _neurons(state, plan))
    state.record("remove", "neuron", done, note)
    return done


def active_neurons(model: nn.Module) -> NeuronPlan:
    """Neurons present and not masked, {layer: [original neurons]} for every layer."""
    state = model_state(model)
    return {layer: state.active(layer, "neuron") for layer in range(state.num_layers)}


def present_neurons(model: nn.Module) -> NeuronPlan:
    """Neurons physically in the weights (masked or not), {layer: [original neurons]}."""
    state = model_state(model)
    return {layer: state.present(layer, "neuron") for layer in range(state.num_layers)}


def masked_neurons(model: nn.Module) -> NeuronPlan:
    """Neurons present but gated off, {layer: [original neurons]} for layers that have any."""
    state = model_state(model)
    return {layer: state.masked(layer, "neuron") for layer in range(state.num_layers)
            if state.masked(layer, "neuron")}


def layer_plan(model: nn.Module, layers: Any, part: str = "block") -> LayerPlan:
    """{layer: ["block"] | parts} from [layer, ...] (each taking `part`), or any form `normalize_layers` reads;
    layers are checked against the model."""
    if part not in LAYER_PARTS:
        raise InvalidPruningPlan(f"part must be one of {', '.join(LAYER_PARTS)}, got {part!r}.")
    if isinstance(layers, Iterable) and not isinstance(layers, (str, dict)):
        layers = [(item, part) if not isinstance(item, (tuple, list)) else item for item in layers]
    plan = normalize_layers(layers)
    num_layers = model_state(model).num_layers
    for layer in plan:
        if not 0 <= layer < num_layers:
            raise InvalidPruningPlan(f"Layer {layer} is out of range: this model has layers 0-{num_layers - 1}.")
    return plan


def _part_indices(plan: LayerPlan) -> dict[int, list[int]]:
    return {layer: [0, 1] if parts == ["block"] else [PART_NAMES.index(p) for p in parts]
            for layer, parts in plan.items()}


def _as_layer_plan(done: dict[int, list[int]]) -> LayerPlan:
    return {layer: ["block"] if sorted(parts) == [0, 1] else [PART_NAMES[p] for p in sorted(parts)]
            for layer, parts in done.items()}


def mask_layers(model: nn.Module, layers: Any, part: str = "block") -> LayerPlan:
    """Gate whole blocks or their attention / MLP parts off (the residual passes through); returns what was masked."""
    state = model_state(model)
    done = _as_layer_plan(state.mask("part", _part_indices(layer_plan(model, layers, part))))
    state.record("mask", "part", done)
    return done


def unmask_layers(model: nn.Module, layers: Any = None, part: str = "block") -> LayerPlan:
    """Gate masked blocks or parts back on (all when `layers` is None); returns what was unmasked."""
    state = model_state(model)
    wanted = None if layers is None else _part_indices(layer_plan(model, layers, part))
    done = _as_layer_plan(state.unmask("part", wanted))
    state.record("unmask", "part", done)
    return done


def remove_layers(model: nn.Module, layers: Any, part: str = "block", note: dict | None = None) -> LayerPlan:
    """Remove whole blocks (they leave the ModuleList) or attention / MLP parts (their weights and output bias
    go); returns what was removed."""
    state = model_state(model)
    plan = layer_plan(model, layers, part)
    blocks = [layer for layer, parts in plan.items() if parts == ["block"]]
    parts = {layer: idx for layer, idx in _part_indices({k: v for k, v in plan.items() if v != ["block"]}).items()}
    done: LayerPlan = _as_layer_plan(state.remove_parts(parts)) if parts else {}
    for layer in state.remove_blocks(blocks) if blocks else []:
        done[layer] = ["block"]
    done = dict(sorted(done.items()))
    state.record("remove", "part", done, note)
    return done


def active_layers(model: nn.Module) -> LayerPlan:
    """Parts present and not masked, {layer: ["attention", "mlp"] or fewer} for every layer ([] for a removed block)."""
    state = model_state(model)
    return {layer: [PART_NAMES[p] for p in state.active(layer, "part")] for layer in range(state.num_layers)}
