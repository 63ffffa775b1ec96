"""Maps for MLP neurons and whole layers (the Maps page beside the head maps).

A layer has hundreds or thousands of neurons, so neurons are shown as a layer × score-percentile grid (each cell:
the score below which that share of the layer's active neurons fall) plus the lowest- and highest-scoring neurons;
layers are a bar per layer for the whole block and for its attention and MLP parts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd
import torch
from torch import nn

from sentinel.metrics import LAYER_COLUMNS, UnitScores, compute_scores, needs_data
from sentinel.metrics.batches import masked_lm_batches, prepare_batches
from sentinel.models.heads import model_heads

# Legends: what a high value means, in one sentence (the same rule as the head metrics' legends).
NEURON_METRICS: dict[str, tuple[str, str]] = {
    "magnitude": ("Weight magnitude", "High: the neuron's input and output weights are large."),
    "activation": ("Mean activation", "High: the neuron fires strongly on the sample text."),
    "wanda": ("Wanda (|weight| × activation)", "High: large weights on strongly active inputs."),
    "gradient": ("Gradient importance", "High: the loss reacts strongly when the neuron is turned down."),
}
LAYER_METRICS: dict[str, tuple[str, str]] = {
    "block_influence": ("Block influence (1 − cos in/out)", "High: the block changes its input a lot."),
    "gradient": ("Layer-gate gradient", "High: the loss reacts strongly when the layer is turned down."),
    "loss_impact": ("Loss impact", "High: the text is predicted clearly worse with the layer (or part) "
                                   "switched off; one pass over the text per layer and part."),
}
PERCENTILES = tuple(range(0, 101, 5))


@dataclass
class UnitMap:
    """One metric's scores for one unit kind, with how many tokens and seconds they took."""

    scores: UnitScores
    tokens: int
    seconds: float


def compute_unit_map(model: nn.Module, tokenizer: Any, kind: str, metric: str, blocks: Any,
                     batch_size: int = 4) -> UnitMap:
    """Run one neuron or layer metric over the text's blocks (`TextBlocks`)."""
    start = time.perf_counter()
    batches, loss_batches, tokens = None, None, 0
    if needs_data([metric]):
        batches = prepare_batches(blocks.dataloader(batch_size=batch_size))
        loss_batches = batches
        if not model_heads(model).adapter.is_causal(model.config):
            loss_batches = masked_lm_batches(batches, getattr(tokenizer, "mask_token_id", None))
        tokens = blocks.num_tokens
    scores = compute_scores(model, [metric], batches, loss_data=loss_batches, kind=kind)[metric]
    return UnitMap(scores, tokens, time.perf_counter() - start)


def neuron_percentiles(scores: UnitScores, percentiles: tuple[int, ...] = PERCENTILES) -> pd.DataFrame:
    """Long frame (layer, percentile, value, active): each layer's score quantiles over its active neurons."""
    rows = []
    for layer, values in enumerate(scores.values):
        live = values[~torch.isnan(values)]
        for p in percentiles:
            value = float(torch.quantile(live, p / 100)) if live.numel() else float("nan")
            rows.append({"layer": layer, "percentile": p, "value": value, "active": int(live.numel())})
    return pd.DataFrame(rows)


def neuron_extremes(scores: UnitScores, count: int = 10) -> pd.DataFrame:
    """The `count` lowest- and highest-scoring active neurons: end, layer, neuron, score."""
    frame = scores.to_frame()
    live = frame[~frame["pruned"]].sort_values(scores.metric, kind="stable")
    low = live.head(count).assign(end="lowest")
    high = live.tail(count).iloc[::-1].assign(end="highest")
    return pd.concat([low, high])[["end", "layer", "neuron", scores.metric]].reset_index(drop=True)


def layer_frame(scores: UnitScores) -> pd.DataFrame:
    """Long frame (layer, part, value) of a layer metric; pruned parts are left out."""
    frame = scores.to_frame()
    frame = frame[~frame["pruned"]].rename(columns={scores.metric: "value"})
    return frame[["layer", "part", "value"]].reset_index(drop=True)


def percentile_heatmap(frame: pd.DataFrame, label: str) -> alt.Chart:
    """Layer × percentile grid, colour = the score at that percentile of the layer's active neurons."""
    return alt.Chart(frame).mark_rect().encode(
        x=alt.X("percentile:O", title="Percentile of the layer's neurons"),
        y=alt.Y("layer:O", title="Layer"),
        color=alt.Color("value:Q", title=label, scale=alt.Scale(scheme="viridis")),
        tooltip=["layer", "percentile", alt.Tooltip("value:Q", format=".4g"), "active"],
    ).properties(height=alt.Step(24))


def layer_bars(frame: pd.DataFrame, label: str) -> alt.Chart:
    """One bar per layer for the block, its attention part and its MLP part, side by side."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("layer:O", title="Layer"), y=alt.Y("value:Q", title=label),
        color=alt.Color("part:N", sort=list(LAYER_COLUMNS), legend=None),
        tooltip=["layer", "part", alt.Tooltip("value:Q", format=".4g")],
    ).properties(height=200, width=220).facet(column=alt.Column("part:N", sort=list(LAYER_COLUMNS), title=None))
