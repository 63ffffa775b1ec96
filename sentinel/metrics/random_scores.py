"""Random head scores: the baseline every metric must beat, reproducible from its seed."""

from __future__ import annotations

import math

import torch
from torch import nn

from sentinel.metrics.scores import HeadScores, active_grid


def random_scores(model: nn.Module, seed: int = 0) -> HeadScores:
    """Uniform [0, 1) draws from a generator seeded with `seed`, one per original head; NaN for pruned heads.

    The draw covers the whole layer x head grid, so a head's score does not depend on which others are pruned.
    """
    active = active_grid(model)
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(active.shape, generator=generator, dtype=torch.float64)   # [layers, heads]
    return HeadScores("random", draws.masked_fill(~active, math.nan), {"seed": seed})
