"""Head importance metrics: per-head scores over original (layer, head) indices, NaN for pruned heads.

Each metric is one module; `compute_scores` runs several by name for the CLI, the app and strategies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from sentinel.errors import DataError, SentinelError
from sentinel.metrics.batches import prepare_batches
from sentinel.metrics.entropy import AttentionStats, attention_entropy, collect_attention_stats, map_entropy
from sentinel.metrics.gradient import gradient_importance
from sentinel.metrics.hybrid import hybrid_scores, rank_fraction
from sentinel.metrics.loss_impact import ProgressCallback, loss_impact
from sentinel.metrics.magnitude import weight_magnitude
from sentinel.metrics.random_scores import random_scores
from sentinel.metrics.scores import HeadScores, active_grid

METRIC_NAMES = ("entropy", "entropy_normalized", "magnitude", "gradient", "loss_impact", "random", "hybrid")
DATA_METRICS = frozenset({"entropy", "entropy_normalized", "gradient", "loss_impact", "hybrid"})
LOSS_METRICS = frozenset({"gradient", "loss_impact"})


def check_metric_names(names: Iterable[str]) -> list[str]:
    """The names, validated (unknown ones raise a SentinelError listing the valid names)."""
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or not names:
        raise SentinelError(f"Unknown metric {', '.join(unknown) or '(none given)'}; choose from "
                            f"{', '.join(METRIC_NAMES)}.")
    return list(dict.fromkeys(names))


def needs_data(names: Iterable[str]) -> bool:
    """Whether any of these metrics runs the model on text."""
    return any(n in DATA_METRICS for n in names)


def compute_scores(
    model: nn.Module,
    metrics: Iterable[str],
    data: Any = None,
    *,
    loss_data: Any = None,
    num_batches: int | None = None,
    seed: int = 0,
    normalize_layers: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, HeadScores]:
    """Run the named metrics; returns {name: HeadScores}. "entropy" also yields "entropy_normalized".

    `data` feeds the forward passes; `loss_data` (default `data`) feeds the loss-based metrics,
    which for masked-LM models must carry labels (see `masked_lm_batches`).
    """
    names = check_metric_names(metrics)
    if needs_data(names) and data is None:
        raise DataError(f"The metrics {', '.join(n for n in names if n in DATA_METRICS)} need text: pass batches "
                        "of token ids.")
    batches = prepare_batches(data, num_batches) if needs_data(names) else []
    loss_batches = batches if loss_data is None else prepare_batches(loss_data, num_batches)
    out: dict[str, HeadScores] = {}
    if {"entropy", "entropy_normalized", "hybrid"} & set(names):
        out["entropy"], out["entropy_normalized"] = attention_entropy(model, batches)
    if {"magnitude", "hybrid"} & set(names):
        out["magnitude"] = weight_magnitude(model)
    if "hybrid" in names:
        out["hybrid"] = hybrid_scores(out["entropy_normalized"], out["magnitude"])
    if "gradient" in names:
        out["gradient"] = gradient_importance(model, loss_batches, normalize_layers=normalize_layers)
    if "loss_impact" in names:
        out["loss_impact"] = loss_impact(model, loss_batches, progress=progress)
    if "random" in names:
        out["random"] = random_scores(model, seed)
    return out


__all__ = [
    "AttentionStats", "DATA_METRICS", "HeadScores", "LOSS_METRICS", "METRIC_NAMES", "active_grid",
    "attention_entropy", "check_metric_names", "collect_attention_stats", "compute_scores", "gradient_importance",
    "hybrid_scores", "loss_impact", "map_entropy", "needs_data", "random_scores", "rank_fraction",
    "weight_magnitude",
]
