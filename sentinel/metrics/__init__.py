"""Importance metrics per unit kind: scores over original (layer, unit) indices, NaN for pruned units.

Heads: entropy, magnitude, gradient, loss impact, random, hybrid. Neurons: magnitude, activation,
wanda, gradient, random. Layers (block / attention / mlp): block influence, gradient, loss impact,
random. Each metric is one module; `compute_scores(..., kind=)` runs several by name for the CLI,
the app and strategies.
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
from sentinel.metrics.layers import block_influence, layer_loss_impact
from sentinel.metrics.neurons import neuron_activation, neuron_magnitude, neuron_wanda
from sentinel.metrics.scores import LAYER_COLUMNS, UNIT_KINDS, HeadScores, UnitScores, active_grid

METRIC_NAMES = ("entropy", "entropy_normalized", "magnitude", "gradient", "loss_impact", "random", "hybrid")
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "head": METRIC_NAMES,
    "neuron": ("magnitude", "activation", "wanda", "gradient", "random"),
    "layer": ("block_influence", "gradient", "loss_impact", "random"),
}
DATA_METRICS = frozenset({"entropy", "entropy_normalized", "gradient", "loss_impact", "hybrid", "activation", "wanda",
                          "block_influence"})
LOSS_METRICS = frozenset({"gradient", "loss_impact"})


def check_metric_names(names: Iterable[str], kind: str = "head") -> list[str]:
    """The names, validated for unit `kind` (unknown ones raise a SentinelError listing the valid names)."""
    if kind not in KIND_METRICS:
        raise SentinelError(f"Unknown unit kind {kind!r}; choose from {', '.join(KIND_METRICS)}.")
    valid = KIND_METRICS[kind]
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        what = "metric" if kind == "head" else f"{kind} metric"
        raise SentinelError(f"Unknown {what} {', '.join(unknown) or '(none given)'}; choose from "
                            f"{', '.join(valid)}.")
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
    kind: str = "head",
) -> dict[str, UnitScores]:
    """Run the named metrics on units of `kind`; returns {name: UnitScores}. "entropy" also yields "entropy_normalized".

    `data` feeds the forward passes; `loss_data` (default `data`) feeds the loss-based metrics,
    which for masked-LM models must carry labels (see `masked_lm_batches`).
    """
    names = check_metric_names(metrics, kind)
    if needs_data(names) and data is None:
        raise DataError(f"The metrics {', '.join(n for n in names if n in DATA_METRICS)} need text: pass batches "
                        "of token ids.")
    batches = prepare_batches(data, num_batches) if needs_data(names) else []
    loss_batches = batches if loss_data is None else prepare_batches(loss_data, num_batches)
    if kind != "head":
        return _compute_other(model, kind, names, batches, loss_batches, seed, normalize_layers, progress)
    out: dict[str, UnitScores] = {}
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


def _compute_other(model: nn.Module, kind: str, names: list[str], batches: list, loss_batches: list, seed: int,
                   normalize_layers: bool, progress: ProgressCallback | None) -> dict[str, UnitScores]:
    """The neuron and layer metrics of `compute_scores`."""
    runners = {
        ("neuron", "magnitude"): lambda: neuron_magnitude(model),
        ("neuron", "activation"): lambda: neuron_activation(model, batches),
        ("neuron", "wanda"): lambda: neuron_wanda(model, batches),
        ("layer", "block_influence"): lambda: block_influence(model, batches),
        ("layer", "loss_impact"): lambda: layer_loss_impact(model, loss_batches, progress=progress),
    }
    out: dict[str, UnitScores] = {}
    for name in names:
        if name == "gradient":
            out[name] = gradient_importance(model, loss_batches, normalize_layers=normalize_layers, kind=kind)
        elif name == "random":
            out[name] = random_scores(model, seed, kind)
        else:
            out[name] = runners[(kind, name)]()
    return out


__all__ = [
    "AttentionStats", "DATA_METRICS", "HeadScores", "KIND_METRICS", "LAYER_COLUMNS", "LOSS_METRICS", "METRIC_NAMES",
    "UNIT_KINDS", "UnitScores", "active_grid", "block_influence", "layer_loss_impact", "neuron_activation",
    "neuron_magnitude", "neuron_wanda",
    "attention_entropy", "check_metric_names", "collect_attention_stats", "compute_scores", "gradient_importance",
    "hybrid_scores", "loss_impact", "map_entropy", "needs_data", "random_scores", "rank_fraction",
    "weight_magnitude",
]
