"""Pruning strategies by name: `get_strategy("entropy", pruning_ratio=0.3)`, and `register_strategy` for your own."""

from __future__ import annotations

import inspect
from typing import Any

from sentinel.errors import SentinelError
from sentinel.pruning.strategies.base import BasePruningStrategy, check_min_heads, heads_for_ratio
from sentinel.pruning.strategies.builtin import (
    EntropyPruningStrategy, GradientPruningStrategy, HybridPruningStrategy, LossImpactPruningStrategy,
    MagnitudePruningStrategy, MetricPruningStrategy, RandomPruningStrategy,
)

_REGISTRY: dict[str, type[BasePruningStrategy]] = {}


def register_strategy(name: str, cls: type[BasePruningStrategy]) -> None:
    """Make `cls` available as `get_strategy(name, ...)` (and `sentinel prune --strategy name`)."""
    if not (isinstance(cls, type) and issubclass(cls, BasePruningStrategy)):
        raise SentinelError(f"Strategy {name!r} must be a subclass of BasePruningStrategy, got {cls!r}.")
    if not name or not name.replace("_", "").isalnum():
        raise SentinelError(f"Strategy names are letters, digits and '_', got {name!r}.")
    _REGISTRY[name] = cls


def strategy_names() -> list[str]:
    return sorted(_REGISTRY)


def strategy_class(name: str) -> type[BasePruningStrategy]:
    """The registered class for `name`; unknown names raise a SentinelError listing the valid ones."""
    if name not in _REGISTRY:
        raise SentinelError(f"Unknown strategy {name!r}; choose one of {', '.join(strategy_names())}.")
    return _REGISTRY[name]


def get_strategy(name: str, **kwargs: Any) -> BasePruningStrategy:
    """A new strategy instance: `get_strategy("magnitude", pruning_ratio=0.25, min_heads=2)`."""
    cls = strategy_class(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise SentinelError(f"Strategy {name!r}: {err}.") from None
    return cls(**kwargs)


for _cls in (RandomPruningStrategy, EntropyPruningStrategy, MagnitudePruningStrategy, GradientPruningStrategy,
             HybridPruningStrategy, LossImpactPruningStrategy):
    register_strategy(_cls.name, _cls)

__all__ = [
    "BasePruningStrategy", "EntropyPruningStrategy", "GradientPruningStrategy", "HybridPruningStrategy",
    "LossImpactPruningStrategy", "MagnitudePruningStrategy", "MetricPruningStrategy", "RandomPruningStrategy",
    "check_min_heads", "get_strategy", "heads_for_ratio", "register_strategy", "strategy_class", "strategy_names",
]
