"""One way to apply any plan: `apply_plan(model, plan, mode)` for heads, neurons and layers together,
and `temporarily_masked(model, plan)` for measuring a model with some units switched off."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from sentinel.models.state import model_state
from sentinel.pruning.masks import mask_heads
from sentinel.pruning.plan import MixedPlanLike, PruneMode, PruningPlan, as_pruning_plan
from sentinel.pruning.removal import remove_heads
from sentinel.pruning.units import mask_layers, mask_neurons, remove_layers, remove_neurons


def apply_plan(model: nn.Module, plan: MixedPlanLike, mode: PruneMode | str = PruneMode.MASK,
               note: dict | None = None) -> PruningPlan:
    """Mask or remove the plan's heads, neurons and layers; returns what was actually done.

    Removal goes heads, neurons, then layers, so a plan naming a block and units inside it is valid.
    `note` is kept in the pruning history of a removal.
    """
    plan = as_pruning_plan(plan)
    mode = PruneMode.parse(mode)
    if mode is PruneMode.MASK:
        return PruningPlan(mask_heads(model, plan.heads) if plan.heads else {},
                           mask_neurons(model, plan.neurons) if plan.neurons else {},
                           mask_layers(model, plan.layers) if plan.layers else {})
    return PruningPlan(remove_heads(model, plan.heads, note) if plan.heads else {},
                       remove_neurons(model, plan.neurons, note) if plan.neurons else {},
                       remove_layers(model, plan.layers, note=note) if plan.layers else {})


@contextmanager
def temporarily_masked(model: nn.Module, plan: MixedPlanLike) -> Iterator[PruningPlan]:
    """Mask `plan` for the duration of the block; masks, gate scales and history come back exactly on exit."""
    state = model_state(model)
    saved = state.snapshot()
    try:
        yield apply_plan(model, plan, PruneMode.MASK)
    finally:
        state.restore(saved)
