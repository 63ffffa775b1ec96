"""Pruning: reversible masks, physical removal, plans of heads / neurons / layers, metrics-driven strategies.

The names below are imported on first use (PEP 562), so `sentinel.pruning.plan` (plain data) can be imported
without torch, e.g. by the chart builders the dashboard's first map uses.
"""

from __future__ import annotations

from sentinel.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("apply_plan", "temporarily_masked"), "sentinel.pruning.apply"),
    **dict.fromkeys(("active_heads", "gradient_gates", "mask_heads", "masked_heads", "present_heads",
                     "unmask_heads"), "sentinel.pruning.masks"),
    **dict.fromkeys(("HeadPlan", "PruneMode", "PruningPlan", "as_pruning_plan", "normalize_plan", "parse_plan_text"),
                    "sentinel.pruning.plan"),
    "remove_heads": "sentinel.pruning.removal",
    **dict.fromkeys(("active_layers", "active_neurons", "mask_layers", "mask_neurons", "masked_neurons",
                     "present_neurons", "remove_layers", "remove_neurons", "unmask_layers", "unmask_neurons"),
                    "sentinel.pruning.units"),
}

__all__ = [
    "HeadPlan", "PruneMode", "PruningPlan", "active_heads", "active_layers", "active_neurons", "apply_plan",
    "as_pruning_plan", "gradient_gates", "mask_heads", "mask_layers", "mask_neurons", "masked_heads",
    "masked_neurons", "normalize_plan", "parse_plan_text", "present_heads", "present_neurons", "remove_heads",
    "remove_layers", "remove_neurons", "temporarily_masked", "unmask_heads", "unmask_layers", "unmask_neurons",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
