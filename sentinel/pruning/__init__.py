"""Pruning: reversible masks, physical removal, plans of heads / neurons / layers, metrics-driven strategies."""

from sentinel.pruning.apply import apply_plan, temporarily_masked
from sentinel.pruning.masks import active_heads, gradient_gates, mask_heads, masked_heads, present_heads, unmask_heads
from sentinel.pruning.plan import HeadPlan, PruneMode, PruningPlan, as_pruning_plan, normalize_plan, parse_plan_text
from sentinel.pruning.removal import remove_heads
from sentinel.pruning.units import (
    active_layers, active_neurons, mask_layers, mask_neurons, masked_neurons, present_neurons, remove_layers,
    remove_neurons, unmask_layers, unmask_neurons,
)

__all__ = [
    "HeadPlan", "PruneMode", "PruningPlan", "active_heads", "active_layers", "active_neurons", "apply_plan",
    "as_pruning_plan", "gradient_gates", "mask_heads", "mask_layers", "mask_neurons", "masked_heads",
    "masked_neurons", "normalize_plan", "parse_plan_text", "present_heads", "present_neurons", "remove_heads",
    "remove_layers", "remove_neurons", "temporarily_masked", "unmask_heads", "unmask_layers", "unmask_neurons",
]
