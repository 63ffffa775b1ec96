"""BasePruningStrategy: turns per-head scores into a {layer: [heads]} plan, the same way for every metric.

Rules every strategy shares (documented once, tested once):
- Candidates are the heads active now (present and unmasked); `pruning_ratio` is a fraction of them.
- Ratio -> count: round(ratio x candidates) with halves rounded DOWN (0.5 x 5 = 2.5 -> 2), see `heads_for_ratio`.
- scope="global" ranks all candidates together; scope="per_layer" applies the ratio inside each layer.
- Every layer keeps at least `min_heads` active heads. A global ranking skips heads whose layer is at
  its minimum and takes the next; a count that cannot be met raises InvalidPruningPlan.
- Ties are broken by (layer, head) order, so the plan is a pure function of scores and seed.
- whole_kv_groups=True (physical removal of grouped-query models): the units are K/V groups, a
  group's score is the mean of its active heads' scores, the ratio counts groups, and the plan
  names every present head of each chosen group, as `remove_heads` requires.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import nn

from sentinel.errors import InvalidPruningPlan, SentinelError
from sentinel.metrics.scores import HeadScores, active_grid, as_score_tensor
from sentinel.models.heads import ModelHeads, model_heads
from sentinel.pruning.plan import HeadPlan, PlanLike, normalize_plan

logger = logging.getLogger(__name__)

SCOPES = ("global", "per_layer")
Importances = HeadScores | torch.Tensor | pd.DataFrame | Mapping[str, Any] | None


def heads_for_ratio(ratio: float, available: int) -> int:
    """round(ratio x available) with exact halves rounded down; float noise below 1e-9 is ignored."""
    return max(0, math.ceil(round(ratio * available, 9) - 0.5))


def check_min_heads(model: nn.Module, plan: PlanLike, min_heads: int) -> None:
    """Raise InvalidPruningPlan if `plan` would leave a layer it touches with fewer than `min_heads` active heads."""
    heads = model_heads(model)
    wanted = normalize_plan(plan, heads.num_layers, heads.num_heads)
    active = active_grid(model)
    problems = []
    for layer, targets in wanted.items():
        live = int(active[layer].sum())
        left = live - sum(1 for h in targets if active[layer, h])
        if left < min_heads and left < live:
            problems.append(f"layer {layer} would keep {left} of {live}")
    if problems:
        raise InvalidPruningPlan(
            f"The plan breaks min_heads={min_heads} ({'; '.join(problems)} active heads). Prune fewer heads "
            "there, or lower --min-heads (0 allows emptying a layer)."
        )


@dataclass
class _Unit:
    """What is pruned as one piece: a head, or a K/V group of heads."""

    layer: int
    live: list[int]        # active heads the unit switches off
    plan: list[int]        # heads the plan names (for a group: every present head)
    priority: float


class BasePruningStrategy(ABC):
    """Shared selection machinery; subclasses say which metric they rank by and which end they prune.

    `select_heads_to_prune(model, head_importances)` takes HeadScores, a [layers, heads] tensor or
    DataFrame, or a {metric name: scores} mapping (from `sentinel.metrics.compute_scores`).
    """

    name: ClassVar[str] = "base"
    metrics: ClassVar[tuple[str, ...]] = ()     # metric names the strategy needs from compute_scores

    def __init__(self, pruning_ratio: float, growth_ratio: float = 0.0, min_heads: int = 1, seed: int = 0,
                 scope: str = "global", whole_kv_groups: bool = False) -> None:
        if not isinstance(pruning_ratio, (int, float)) or not 0.0 <= pruning_ratio < 1.0:
            raise InvalidPruningPlan(f"The pruning ratio must be in [0, 1) (a fraction of the active heads), "
                                     f"got {pruning_ratio!r}.")
        if not 0.0 <= growth_ratio <= 1.0:
            raise InvalidPruningPlan(f"The growth ratio must be in [0, 1], got {growth_ratio!r}.")
        if min_heads < 0:
            raise InvalidPruningPlan(f"min_heads must be 0 or more, got {min_heads}.")
        if scope not in SCOPES:
            raise SentinelError(f"Unknown scope {scope!r}; use one of {', '.join(SCOPES)}.")
        self.pruning_ratio = float(pruning_ratio)
        self.growth_ratio = float(growth_ratio)
        self.min_heads = int(min_heads)
        self.seed = int(seed)
        self.scope = scope
        self.whole_kv_groups = whole_kv_groups

    def to_dict(self) -> dict[str, Any]:
        """The settings, for the pruning record and the experiment store."""
        return {"strategy": self.name, "pruning_ratio": self.pruning_ratio, "growth_ratio": self.growth_ratio,
                "min_heads": self.min_heads, "seed": self.seed, "scope": self.scope,
                "whole_kv_groups": self.whole_kv_groups}

    @abstractmethod
    def prune_priority(self, model: nn.Module, head_importances: Importances) -> torch.Tensor:
        """[layers, heads] float: the higher, the earlier a head is pruned (NaN for inactive heads is fine)."""

    def metric(self, head_importances: Importances, name: str) -> torch.Tensor:
        """The [layers, heads] scores of metric `name` out of whatever the caller passed."""
        if head_importances is None:
            raise SentinelError(f"The {self.name} strategy ranks heads by {name}; compute it first, e.g. "
                                f"sentinel.metrics.compute_scores(model, {list(self.metrics)}, data).")
        if isinstance(head_importances, Mapping):
            if name not in head_importances:
                raise SentinelError(f"The {self.name} strategy needs {name!r} scores; got only "
                                    f"{', '.join(map(str, head_importances)) or 'none'}.")
            head_importances = head_importances[name]
        elif isinstance(head_importances, HeadScores) and head_importances.metric != name:
            raise SentinelError(f"The {self.name} strategy ranks by {name!r} but was given "
                                f"{head_importances.metric!r} scores.")
        return as_score_tensor(head_importances, name)

    def select_heads_to_prune(self, model: nn.Module, head_importances: Importances = None) -> HeadPlan:
        """The heads to prune, {layer: [original heads]}, following the rules in this module's docstring."""
        heads = model_heads(model)
        active = active_grid(model)
        priority = self.prune_priority(model, head_importances)
        if tuple(priority.shape) != tuple(active.shape):
            raise SentinelError(f"Scores are shaped {tuple(priority.shape)} but the model has "
                                f"{tuple(active.shape)} layers x heads; compute them on this model.")
        unscored = active & torch.isnan(priority)
        if bool(unscored.any()):
            layer, head = unscored.nonzero()[0].tolist()
            raise SentinelError(f"Active head {layer}:{head} has no score (NaN); the scores were computed on a "
                                "differently pruned model. Recompute them on this one.")
        units = self._units(heads, active, priority)
        budget = {layer: int(active[layer].sum()) - self.min_heads for layer in range(heads.num_layers)}
        if self.scope == "global":
            chosen = self._take(units, heads_for_ratio(self.pruning_ratio, len(units)), budget, "the model")
        else:
            chosen = []
            for layer in range(heads.num_layers):
                mine = [u for u in units if u.layer == layer]
                chosen += self._take(mine, heads_for_ratio(self.pruning_ratio, len(mine)), budget, f"layer {layer}")
        plan: HeadPlan = {}
        for unit in chosen:
            plan.setdefault(unit.layer, []).extend(unit.plan)
        plan = {layer: sorted(hs) for layer, hs in sorted(plan.items())}
        logger.info("%s strategy chose %d heads (ratio %.3f, %s).", self.name,
                    sum(len(v) for v in plan.values()), self.pruning_ratio, self.scope)
        return plan

    def _units(self, heads: ModelHeads, active: torch.Tensor, priority: torch.Tensor) -> list[_Unit]:
        """Candidates in pruning order: highest priority first, ties by (layer, head)."""
        size = heads.kv_group_size if self.whole_kv_groups else 1
        units = []
        for layer in range(heads.num_layers):
            present = heads.present(layer)
            for start in range(0, heads.num_heads, size):
                group = range(start, start + size)
                live = [h for h in group if active[layer, h]]
                if live:
                    score = float(priority[layer, live].mean())
                    units.append(_Unit(layer, live, [h for h in group if h in present], score))
        return sorted(units, key=lambda u: (-u.priority, u.layer, u.live[0]))

    def _take(self, units: list[_Unit], count: int, budget: dict[int, int], where: str) -> list[_Unit]:
        chosen = []
        for unit in units:
            if len(chosen) == count:
                break
            if budget[unit.layer] >= len(unit.live):
                budget[unit.layer] -= len(unit.live)
                chosen.append(unit)
        if len(chosen) < count:
            what = "K/V groups" if self.whole_kv_groups else "heads"
            raise InvalidPruningPlan(
                f"Ratio {self.pruning_ratio} asks for {count} {what} of {len(units)} in {where}, but keeping "
                f"min_heads={self.min_heads} per layer allows only {len(chosen)}. Lower the ratio or min_heads."
            )
        return chosen

    def select_heads_to_grow(self, model: nn.Module, pruned_heads: PlanLike,
                             metrics: HeadScores | torch.Tensor | Mapping[int, float] | None = None) -> dict[int, int]:
        """How many heads each layer gets back: round(growth_ratio x pruned heads), halves down.

        Without `metrics` the heads go back in proportion to what each layer lost (one at a time to
        the layer with the most pruned heads not yet regrown; ties to the lower layer). With
        `metrics` (per-layer values, or layer x head scores averaged over scored heads; higher =
        needs heads more) the highest-scoring layers are refilled first, each up to what it lost.
        """
        heads = model_heads(model)
        pruned = normalize_plan(pruned_heads, heads.num_layers, heads.num_heads)
        lost = {layer: len(hs) for layer, hs in pruned.items() if hs}
        count = heads_for_ratio(self.growth_ratio, sum(lost.values()))
        grow: dict[int, int] = {}
        if metrics is None:
            for _ in range(count):
                layer = max(lost, key=lambda l: (lost[l] - grow.get(l, 0), -l))
                grow[layer] = grow.get(layer, 0) + 1
        else:
            score = _layer_scores(metrics, heads.num_layers)
            for layer in sorted(lost, key=lambda l: (-score[l], l)):
                take = min(lost[layer], count - sum(grow.values()))
                if take > 0:
                    grow[layer] = take
        return dict(sorted(grow.items()))


def _layer_scores(metrics: HeadScores | torch.Tensor | Mapping[int, float], num_layers: int) -> list[float]:
    """One float per layer from per-layer values or layer x head scores (NaN heads ignored)."""
    if isinstance(metrics, Mapping):
        return [float(metrics.get(layer, -math.inf)) for layer in range(num_layers)]
    values = metrics.values if isinstance(metrics, HeadScores) else torch.as_tensor(metrics, dtype=torch.float64)
    if values.dim() == 2:
        values = values.nanmean(dim=1)
    if values.shape != (num_layers,):
        raise SentinelError(f"Growth metrics must give one value per layer ({num_layers}), got {tuple(values.shape)}.")
    return [-math.inf if math.isnan(v) else float(v) for v in values.tolist()]
