"""The documented functional API for entropy- and magnitude-based pruning, as thin calls into metrics + strategies.

    stats = collect_attention_distributions(model, dataloader, num_batches=5)
    entropy = compute_attention_entropy(stats)                 # [layers, heads] nats, NaN = pruned
    pruned = entropy_based_pruning(model, stats, prune_ratio=0.3)   # [(layer, head), ...], now masked
    pruned = magnitude_based_pruning(model, prune_ratio=0.3)

`collect_attention_distributions` keeps what the entropy needs from each attention distribution
(per-head sums over valid queries), never the [batch, heads, q, k] maps themselves, so memory stays
that of one layer's map. Both pruning functions mask the chosen heads (reversible; see
`sentinel.pruning.masks`) with the strategies' rules: global ranking, min_heads=1 per layer,
count = round(ratio x active heads) with halves rounded down.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sentinel.errors import SentinelError
from sentinel.metrics.entropy import AttentionStats, collect_attention_stats, map_entropy
from sentinel.metrics.magnitude import weight_magnitude
from sentinel.pruning.masks import mask_heads
from sentinel.pruning.plan import plan_to_pairs
from sentinel.pruning.strategies import EntropyPruningStrategy, MagnitudePruningStrategy


def collect_attention_distributions(model: nn.Module, dataloader: Any, num_batches: int = 5) -> AttentionStats:
    """Run up to `num_batches` batches and collect per-head entropy statistics of the attention distributions."""
    return collect_attention_stats(model, dataloader, num_batches)


def compute_attention_entropy(distributions: AttentionStats | torch.Tensor, normalized: bool = False,
                              attention_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    """Mean entropy per head: [layers, heads] from collected stats, or [heads] from one probability map.

    A map is [batch, heads, q, k] (or [heads, q, k]); `attention_mask` and `causal` then say which
    queries count and how many keys each sees (for `normalized`). Stats already know both.
    """
    if isinstance(distributions, AttentionStats):
        scores = distributions.entropy_normalized() if normalized else distributions.entropy()
        return scores.values
    if isinstance(distributions, torch.Tensor):
        return map_entropy(distributions, attention_mask, causal, normalized)
    raise SentinelError(f"compute_attention_entropy takes the result of collect_attention_distributions or an "
                        f"attention probability tensor, got {type(distributions).__name__}.")


def entropy_based_pruning(model: nn.Module, distributions: AttentionStats,
                          prune_ratio: float = 0.3) -> list[tuple[int, int]]:
    """Mask the highest-entropy heads (a `prune_ratio` fraction of the active heads); returns them as (layer, head)."""
    scores = {"entropy": compute_attention_entropy(distributions)}
    plan = EntropyPruningStrategy(prune_ratio).select_heads_to_prune(model, scores)
    mask_heads(model, plan)
    return plan_to_pairs(plan)


def magnitude_based_pruning(model: nn.Module, prune_ratio: float = 0.3) -> list[tuple[int, int]]:
    """Mask the lowest-magnitude heads (a `prune_ratio` fraction of the active heads); returns them as (layer, head)."""
    plan = MagnitudePruningStrategy(prune_ratio).select_heads_to_prune(model, weight_magnitude(model))
    mask_heads(model, plan)
    return plan_to_pairs(plan)
