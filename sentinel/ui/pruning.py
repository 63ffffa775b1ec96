"""Turning the Prune page's choices into an engine plan: a strategy at a ratio, or the selected heads.

Both paths check `min_heads` with the strategies' own rule before anything is pruned.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from sentinel.errors import InvalidPruningPlan
from sentinel.metrics.scores import HeadScores
from sentinel.pruning.plan import HeadPlan, PruningPlan
from sentinel.pruning.strategies import check_min_heads, get_strategy, strategy_class
from sentinel.ui.session import WorkingModel


@dataclass(frozen=True)
class PruneSettings:
    """The Prune page's strategy settings (its defaults until the user changes them), shared with Head maps'
    preview so both pages outline the same heads."""

    strategy: str = "entropy"
    ratio: float = 0.3
    min_heads: int = 1
    scope: str = "global"
    seed: int = 0
    mode: str = "mask"

    def describe(self) -> str:
        where = "whole model" if self.scope == "global" else "each layer"
        return f"{self.strategy} {self.ratio:.0%} ({where}, min_heads={self.min_heads}, {self.mode})"


def preview_plan(working: WorkingModel, scores: Mapping[str, HeadScores], settings: PruneSettings,
                 kv_group_size: int = 1) -> tuple[HeadPlan, str]:
    """The plan Prune would apply now with `settings` (the same call the Prune button makes)."""
    return choose_by_strategy(working, scores, settings.strategy, settings.ratio, settings.min_heads, settings.scope,
                              settings.seed, whole_kv_groups=(settings.mode == "remove" and kv_group_size > 1))


APPLIED_STRATEGY = "strategy-applied"   # caches: (working id, version after, PruneSettings) of the last strategy step


def mark_applied(caches: MutableMapping[str, Any], working: WorkingModel, settings: PruneSettings) -> None:
    """Remember that `settings` were just applied as a step: the model's version now is their result."""
    caches[APPLIED_STRATEGY] = (id(working), working.version, settings)


def just_applied(caches: Mapping[str, Any], working: WorkingModel, settings: PruneSettings) -> bool:
    """Whether the model as it is now is exactly the result of applying `settings` (nothing changed since)."""
    return caches.get(APPLIED_STRATEGY) == (id(working), working.version, settings)


def preview_or_note(working: WorkingModel, scores: Mapping[str, HeadScores], settings: PruneSettings,
                    kv_group_size: int, applied: bool) -> tuple[tuple[HeadPlan, str] | None, str | None]:
    """The plan Prune would apply now, or, when `settings` were just applied (`applied`) and a further step with
    them cannot be met, no plan and a note saying so: the ratio is a share of the heads active *now*, so right
    after a step the same settings ask for that share of what is left, which min_heads often forbids. That is
    not a failure of the step just taken. Settings the user chose that cannot be met still raise."""
    try:
        return preview_plan(working, scores, settings, kv_group_size), None
    except InvalidPruningPlan as refusal:
        if not applied:
            raise
        active = len(working.active())
        return None, (f"Pruned with these settings ({settings.describe()}). Pressing Prune again would prune a "
                      f"further {settings.ratio:.0%} of the {active} heads still active, which cannot be done: "
                      f"{refusal} Undo takes the step back.")


def metrics_for(strategy: str) -> tuple[str, ...]:
    """The metric names a strategy ranks by (empty for random)."""
    return strategy_class(strategy).metrics


def choose_by_strategy(
    working: WorkingModel,
    scores: Mapping[str, HeadScores],
    strategy: str,
    ratio: float,
    min_heads: int,
    scope: str = "global",
    seed: int = 0,
    whole_kv_groups: bool = False,
) -> tuple[HeadPlan, str]:
    """The plan `strategy` picks at `ratio` from scores measured on the model as it is now, and a label for it."""
    chooser = get_strategy(strategy, pruning_ratio=ratio, min_heads=min_heads, seed=seed, scope=scope,
                           whole_kv_groups=whole_kv_groups)
    plan = chooser.select_heads_to_prune(working.model, dict(scores))
    if not any(plan.values()):
        raise InvalidPruningPlan(f"A ratio of {ratio:.2f} selects no heads out of {len(working.active())}; "
                                 "raise the ratio.")
    where = "whole model" if scope == "global" else "each layer"
    return plan, f"{strategy} {ratio:.0%} ({where}, min_heads={min_heads})"


def choose_by_selection(working: WorkingModel, plan: HeadPlan | PruningPlan, min_heads: int
                        ) -> tuple[PruningPlan, str]:
    """The selected heads (and layers and neurons) as a plan, refused if empty or if its heads would leave a layer
    below `min_heads`."""
    plan = plan if isinstance(plan, PruningPlan) else PruningPlan(heads=plan)
    if plan.is_empty():
        raise InvalidPruningPlan("Nothing is selected: click heads in a map (shift-click adds more) or pick them in "
                                 "the list, click layer bars on Maps → Layers, or set a neuron rule on Maps → MLP "
                                 "neurons, then prune.")
    check_min_heads(working.model, plan.heads, min_heads)
    counts = plan.counts()
    return plan, "selection of " + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
