"""Hybrid importance: a weighted mix of the normalised-entropy rank and the magnitude rank of each head.

Ranks make the two scales comparable: each metric becomes its rank fraction in [0, 1] among the
scored heads (ties share their average rank). Focused heads (low normalised entropy) and heavy
heads (large magnitude) count as important:

    hybrid = w * (1 - rank(entropy_normalized)) + (1 - w) * rank(magnitude)

so higher means more important, and the lowest are pruned first.
"""

from __future__ import annotations

import math

import torch

from sentinel.errors import SentinelError
from sentinel.metrics.scores import HeadScores, as_score_tensor


def rank_fraction(values: torch.Tensor) -> torch.Tensor:
    """[layers, heads] rank of each scored value among all scored values, scaled to [0, 1]; NaN stays NaN."""
    scored = ~torch.isnan(values)
    v = values[scored]                                                   # [n]
    unique, inverse, counts = torch.unique(v, sorted=True, return_inverse=True, return_counts=True)
    below = (torch.cumsum(counts, 0) - counts).double()                  # [unique] values below each
    less, equal = below[inverse], counts.double()[inverse]               # [n] (sorting: O(n log n), any n)
    rank = less + (equal - 1) / 2
    scale = max(len(v) - 1, 1)
    out = torch.full_like(values, math.nan, dtype=torch.float64)
    out[scored] = rank / scale if len(v) > 1 else torch.full_like(rank, 0.5)
    return out


def hybrid_scores(entropy_normalized: HeadScores | torch.Tensor, magnitude: HeadScores | torch.Tensor,
                  entropy_weight: float = 0.5) -> HeadScores:
    """Hybrid importance per head (higher = keep); NaN where either metric has no score."""
    if not 0.0 <= entropy_weight <= 1.0:
        raise SentinelError(f"entropy_weight must be in [0, 1], got {entropy_weight}.")
    ent = as_score_tensor(entropy_normalized, "entropy_normalized")
    mag = as_score_tensor(magnitude, "magnitude")
    if ent.shape != mag.shape:
        raise SentinelError(f"Entropy scores {tuple(ent.shape)} and magnitude scores {tuple(mag.shape)} "
                            "come from different models; compute both on the same model.")
    both = ~torch.isnan(ent) & ~torch.isnan(mag)
    ent_rank = rank_fraction(ent.masked_fill(~both, math.nan))
    mag_rank = rank_fraction(mag.masked_fill(~both, math.nan))
    values = entropy_weight * (1 - ent_rank) + (1 - entropy_weight) * mag_rank
    return HeadScores("hybrid", values, {"entropy_weight": entropy_weight})
