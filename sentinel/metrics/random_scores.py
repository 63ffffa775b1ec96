"""Random head scores: the baseline every metric must beat, reproducible from its seed."""

from __future__ import annotations

import math

import torch
from torch import nn

from sentinel.metrics.scores import UnitScores, active_grid


def random_scores(model: nn.Module, seed: int = 0, kind: str = "head") -> UnitScores:
    """Uniform [0, 1) draws from a generator seeded with `seed`, one per original unit of `kind`; NaN for pruned ones.

    The draw covers the whole layer x unit grid, so a unit's score does not depend on which others are pruned.
    """
    active = active_grid(model, kind)
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(active.shape, generator=generator, dtype=torch.float64)   # [layers, units]
    return UnitScores("random", draws.masked_fill(~active, math.nan), {"seed": seed}, kind)
