"""The built-in strategies: each names the metric it ranks by and which end of the ranking it prunes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from sentinel.errors import SentinelError
from sentinel.metrics.hybrid import hybrid_scores
from sentinel.metrics.random_scores import random_scores
from sentinel.pruning.strategies.base import BasePruningStrategy, Importances


class MetricPruningStrategy(BasePruningStrategy):
    """Ranks by one metric of `compute_scores`: the lowest values go first unless `prune_highest`."""

    prune_highest: ClassVar[bool] = False

    def metric_key(self) -> str:
        return self.metrics[0]

    def prune_priority(self, model: nn.Module, head_importances: Importances) -> torch.Tensor:
        values = self.metric(head_importances, self.metric_key())
        return values if self.prune_highest else -values


class RandomPruningStrategy(BasePruningStrategy):
    """Prunes the heads with the LOWEST `random_scores(model, seed)` (the baseline); `head_importances` is unused."""

    name: ClassVar[str] = "random"

    def prune_priority(self, model: nn.Module, head_importances: Importances) -> torch.Tensor:
        return -random_scores(model, self.seed).values


class EntropyPruningStrategy(MetricPruningStrategy):
    """Prunes the HIGHEST-entropy heads first: diffuse heads that attend everywhere carry least structure.

    Ranks by raw entropy by default; `normalized=True` ranks by entropy / log(visible keys).
    """

    name: ClassVar[str] = "entropy"
    metrics: ClassVar[tuple[str, ...]] = ("entropy",)     # compute_scores' "entropy" also yields the normalised one
    prune_highest: ClassVar[bool] = True

    def __init__(self, pruning_ratio: float, growth_ratio: float = 0.0, min_heads: int = 1, seed: int = 0,
                 scope: str = "global", whole_kv_groups: bool = False, normalized: bool = False) -> None:
        super().__init__(pruning_ratio, growth_ratio, min_heads, seed, scope, whole_kv_groups)
        self.normalized = normalized

    def metric_key(self) -> str:
        return "entropy_normalized" if self.normalized else "entropy"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "normalized": self.normalized}


class MagnitudePruningStrategy(MetricPruningStrategy):
    """Prunes the LOWEST weight-magnitude heads first."""

    name: ClassVar[str] = "magnitude"
    metrics: ClassVar[tuple[str, ...]] = ("magnitude",)


class GradientPruningStrategy(MetricPruningStrategy):
    """Prunes the LOWEST gradient-importance heads first (Michel et al., 2019)."""

    name: ClassVar[str] = "gradient"
    metrics: ClassVar[tuple[str, ...]] = ("gradient",)


class LossImpactPruningStrategy(MetricPruningStrategy):
    """Prunes the heads whose masking raises the loss LEAST (exact, L x H forward passes to score)."""

    name: ClassVar[str] = "loss_impact"
    metrics: ClassVar[tuple[str, ...]] = ("loss_impact",)


class HybridPruningStrategy(BasePruningStrategy):
    """Prunes the LOWEST hybrid importance first: a weighted mix of normalised-entropy and magnitude ranks.

    `entropy_weight` w weighs the entropy rank (1 - w the magnitude rank); see sentinel.metrics.hybrid.
    """

    name: ClassVar[str] = "hybrid"
    metrics: ClassVar[tuple[str, ...]] = ("entropy_normalized", "magnitude")

    def __init__(self, pruning_ratio: float, growth_ratio: float = 0.0, min_heads: int = 1, seed: int = 0,
                 scope: str = "global", whole_kv_groups: bool = False, entropy_weight: float = 0.5) -> None:
        super().__init__(pruning_ratio, growth_ratio, min_heads, seed, scope, whole_kv_groups)
        if not 0.0 <= entropy_weight <= 1.0:
            raise SentinelError(f"entropy_weight must be in [0, 1], got {entropy_weight!r}.")
        self.entropy_weight = entropy_weight

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "entropy_weight": self.entropy_weight}

    def prune_priority(self, model: nn.Module, head_importances: Importances) -> torch.Tensor:
        combined = hybrid_scores(self.metric(head_importances, "entropy_normalized"),
                                 self.metric(head_importances, "magnitude"), self.entropy_weight)
        return -combined.values
