"""Reversible head masks: a per-head gate multiplied into the input of each layer's output projection.

That input still holds every head's output separately ([..., heads * head_dim]), so a gate of 0
removes a head's contribution exactly and stops its gradient; with no head masked the gate is
dropped altogether, so unmasking restores the original computation bit for bit.

Besides 0 (masked) and 1 (active), an active head may carry a fractional gate scale in (0, 1]
(`set_gate_scales`), used to fade a freshly grown head in. Masking wins over a scale; a scale of 1
removes it. Scales live in each attention module's `sentinel_gate_scale` dict and are not saved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from sentinel.errors import InvalidPruningPlan
from sentinel.models.heads import ModelHeads, model_heads
from sentinel.pruning.plan import HeadPlan, PlanLike, normalize_plan

logger = logging.getLogger(__name__)

_GATE = "sentinel_gate"


def _gate_hook(module: nn.Module, args: tuple) -> tuple | None:
    gate = getattr(module, _GATE, None)
    if gate is None:
        return None
    hidden = args[0]                                     # [batch, pos, heads * head_dim]
    per_head = hidden.unflatten(-1, (gate.shape[0], -1))  # [batch, pos, heads, head_dim]
    gated = (per_head * gate.to(hidden.dtype)[:, None]).flatten(-2)
    return (gated, *args[1:])


def _install_gate(proj: nn.Module, gate: torch.Tensor | None) -> None:
    """Set the projection's gate (None = no gating), registering the hook once per module."""
    if _GATE not in proj._buffers:
        proj.register_buffer(_GATE, None, persistent=False)
        proj.register_forward_pre_hook(_gate_hook)
    proj._buffers[_GATE] = gate


def _gate_values(heads: ModelHeads, layer: int) -> list[float]:
    """Gate value of each present head of `layer`: 0 masked, its scale while fading in, else 1."""
    masked, scales = heads.masked(layer), _scales(heads.modules[layer])
    return [0.0 if h in masked else scales.get(h, 1.0) for h in heads.present(layer)]


def refresh_gates(heads: ModelHeads, layers: list[int] | None = None) -> None:
    """Rebuild the gates of `layers` (default all) from their masked lists and gate scales."""
    for layer in range(heads.num_layers) if layers is None else layers:
        proj = heads.adapter.output_projection(heads.modules[layer])
        values = _gate_values(heads, layer)
        if all(v == 1.0 for v in values):   # nothing masked or fading (or no heads): no gate at all
            if _GATE in proj._buffers:
                proj._buffers[_GATE] = None
            continue
        weight = proj.weight
        _install_gate(proj, torch.tensor(values, dtype=weight.dtype, device=weight.device))


def _scales(attn: nn.Module) -> dict[int, float]:
    if not hasattr(attn, "sentinel_gate_scale"):
        attn.sentinel_gate_scale = {}
    return attn.sentinel_gate_scale


def set_gate_scales(model: nn.Module, scales: Mapping[int, Mapping[int, float]]) -> None:
    """Set fractional gates {layer: {head: value in (0, 1]}} on present, unmasked heads (1 clears the scale)."""
    heads = model_heads(model)
    for layer, per_head in scales.items():
        if not 0 <= int(layer) < heads.num_layers:
            raise InvalidPruningPlan(f"Layer {layer} is out of range: this model has layers 0-{heads.num_layers - 1}.")
        current = _scales(heads.modules[int(layer)])
        for head, value in per_head.items():
            if head not in heads.present(int(layer)) or head in heads.masked(int(layer)):
                raise InvalidPruningPlan(f"Layer {layer} head {head} is removed or masked; only active heads take "
                                         "a gate scale. Unmask or grow it first.")
            if not 0.0 < float(value) <= 1.0:
                raise InvalidPruningPlan(f"Gate scale {value} for layer {layer} head {head} is outside (0, 1].")
            if float(value) == 1.0:
                current.pop(head, None)
            else:
                current[head] = float(value)
    refresh_gates(heads, [int(layer) for layer in scales])


def gate_scales(model: nn.Module) -> dict[int, dict[int, float]]:
    """Fractional gate scales of present, unmasked heads, {layer: {head: value}} for layers that have any."""
    heads = model_heads(model)
    result: dict[int, dict[int, float]] = {}
    for layer in range(heads.num_layers):
        present, masked = heads.present(layer), heads.masked(layer)
        live = {h: v for h, v in _scales(heads.modules[layer]).items() if h in present and h not in masked}
        if live:
            result[layer] = live
    return result


def mask_heads(model: nn.Module, plan: PlanLike) -> HeadPlan:
    """Switch heads off reversibly; returns the heads newly masked (original indices)."""
    heads = model_heads(model)
    wanted = normalize_plan(plan, heads.num_layers, heads.num_heads)
    newly: HeadPlan = {}
    for layer, targets in wanted.items():
        present, masked = heads.present(layer), heads.masked(layer)
        for head in targets:
            if head not in present:
                logger.warning("Layer %d head %d was already removed; masking it does nothing.", layer, head)
            elif head in masked:
                logger.warning("Layer %d head %d is already masked.", layer, head)
            else:
                masked.append(head)
                newly.setdefault(layer, []).append(head)
        masked.sort()
    refresh_gates(heads, list(wanted))
    _record(model, "mask", newly)
    return newly


def unmask_heads(model: nn.Module, plan: PlanLike | None = None) -> HeadPlan:
    """Switch masked heads back on (all of them when `plan` is None); returns the heads unmasked."""
    heads = model_heads(model)
    if plan is None:
        wanted = {layer: list(heads.masked(layer)) for layer in range(heads.num_layers)}
    else:
        wanted = normalize_plan(plan, heads.num_layers, heads.num_heads)
    restored: HeadPlan = {}
    for layer, targets in wanted.items():
        masked = heads.masked(layer)
        for head in targets:
            if head in masked:
                masked.remove(head)
                restored.setdefault(layer, []).append(head)
            elif head not in heads.present(layer):
                logger.warning("Layer %d head %d was removed; unmasking cannot bring it back.", layer, head)
    refresh_gates(heads, list(wanted))
    _record(model, "unmask", restored)
    return restored


def active_heads(model: nn.Module) -> HeadPlan:
    """Heads that are present and not masked, {layer: [original heads]} for every layer."""
    heads = model_heads(model)
    return {
        layer: [h for h in heads.present(layer) if h not in heads.masked(layer)] for layer in range(heads.num_layers)
    }


def present_heads(model: nn.Module) -> HeadPlan:
    """Heads physically in the weights (masked or not), {layer: [original heads]}."""
    heads = model_heads(model)
    return {layer: list(heads.present(layer)) for layer in range(heads.num_layers)}


def masked_heads(model: nn.Module) -> HeadPlan:
    """Heads present but gated off, {layer: [original heads]} for layers that have any."""
    heads = model_heads(model)
    return {layer: list(heads.masked(layer)) for layer in range(heads.num_layers) if heads.masked(layer)}


@contextmanager
def gradient_gates(model: nn.Module) -> Iterator[dict[int, torch.Tensor]]:
    """Temporarily put a gate that requires grad on every layer with present heads.

    Yields {layer: gate[present heads]}; each gate holds 1 for active and 0 for masked heads (a fading-in
    head keeps its scale), so
    after `loss.backward()` `gate.grad[i]` is d loss / d gate of present head i. The previous gates
    come back on exit.
    """
    heads = model_heads(model)
    gates: dict[int, torch.Tensor] = {}
    saved: dict[int, torch.Tensor | None] = {}
    try:
        for layer in range(heads.num_layers):
            if not heads.present(layer):
                continue
            proj = heads.adapter.output_projection(heads.modules[layer])
            saved[layer] = proj._buffers.get(_GATE)
            values = _gate_values(heads, layer)
            gate = torch.tensor(values, dtype=torch.float32, device=proj.weight.device, requires_grad=True)
            _install_gate(proj, gate)
            gates[layer] = gate
        yield gates
    finally:
        for layer, previous in saved.items():
            proj = heads.adapter.output_projection(heads.modules[layer])
            proj._buffers[_GATE] = previous


def pruning_history(model: nn.Module) -> list[dict]:
    """What was done to the model's heads, in order (mask, unmask, remove, grow), with original indices."""
    if not hasattr(model, "sentinel_history"):
        model.sentinel_history = []
    return model.sentinel_history


def _record(model: nn.Module, op: str, plan: HeadPlan, note: dict | None = None) -> None:
    if plan:
        entry = {"op": op, "heads": {str(k): list(v) for k, v in sorted(plan.items())}}
        if note:
            entry["note"] = note
        pruning_history(model).append(entry)
