"""Pruning: reversible masks, physical removal, head plans, metrics-driven strategies."""

from sentinel.pruning.masks import active_heads, gradient_gates, mask_heads, masked_heads, present_heads, unmask_heads
from sentinel.pruning.plan import HeadPlan, normalize_plan, parse_plan_text
from sentinel.pruning.removal import remove_heads

__all__ = [
    "HeadPlan", "active_heads", "gradient_gates", "mask_heads", "masked_heads", "normalize_plan",
    "parse_plan_text", "present_heads", "remove_heads", "unmask_heads",
]
