"""Physical head removal: the heads' Q/K/V/O slices leave the weights, so the model gets smaller and faster.

Heads keep their original names: the model's pruning state (`sentinel.models.state`) maps its
remaining weight slices back to original head indices across any number of removals. A layer that
loses every head keeps a stand-in forward that returns its output projection's bias, and still
advances the KV cache. Grouped-query models lose whole K/V groups, or the same number of query heads
from every group of a layer.
"""

from __future__ import annotations

import logging

from torch import nn

from sentinel.models.state import ModelState, model_state
from sentinel.pruning.plan import HeadPlan, PlanLike, normalize_plan

logger = logging.getLogger(__name__)


def check_kv_groups(heads: ModelState, plan: HeadPlan) -> None:
    """Refuse a removal that would leave a layer's K/V groups with unequal query-head counts."""
    heads.check_even_groups(plan)


def remove_heads(model: nn.Module, plan: PlanLike, note: dict | None = None) -> HeadPlan:
    """Remove heads from the weights (original indices); returns the heads actually removed.

    Already-removed heads are skipped with a warning. `note` (e.g. the strategy that chose them) is
    kept in the pruning history that `save_model` writes.
    """
    state = model_state(model)
    done = state.remove("head", normalize_plan(plan, state.num_layers, state.num_heads))
    state.record("remove", "head", done, note)
    return done


def keep_only(model: nn.Module, kept: dict[int, list[int]]) -> None:
    """Remove every present head not listed in `kept` (used to rebuild saved pruned shapes)."""
    state = model_state(model)
    plan = {layer: [h for h in state.present(layer) if h not in kept.get(layer, [])]
            for layer in range(state.num_layers)}
    remove_heads(model, {layer: hs for layer, hs in plan.items() if hs})
