"""Maps for MLP neurons and whole layers (the Maps page beside the head maps).

A layer has hundreds or thousands of neurons, so neurons are shown as a layer × score-percentile grid (each cell:
the score below which that share of the layer's active neurons fall) plus the lowest- and highest-scoring neurons;
layers are a bar per layer for the whole block and for its attention and MLP parts. When Prune's target has a
prediction (a `PruningPlan`), the grid outlines the cells whose neurons it would remove, each layer's histogram
splits kept from removed neurons (with the cut, when the map shows the metric the target ranks by), and the bars
of the layers it would remove are outlined. The units a session selected (layers clicked on the bars, neurons chosen
by a rule) are outlined the same way in red, as selected heads are on the head map.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd
import torch
from torch import nn

from sentinel.charts import FIT_WIDTH, short_number
from sentinel.metrics import LAYER_COLUMNS, UnitScores, compute_scores, needs_data
from sentinel.metrics.batches import masked_lm_batches, prepare_batches
from sentinel.models.heads import model_heads
from sentinel.pruning.plan import PruningPlan

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
HISTOGRAM_BINS = 30
GOING_COLOUR, KEPT_COLOUR = "#ff8c00", "#5b7fa6"      # dashed orange = what Prune would remove (as on the heads)
GOES, STAYS = "removed by the target", "kept"
SELECTED_COLOUR, PICKED = "#ff2b2b", "selected"      # solid red = selected (as on the head map)
# the layer bars' fill per part: blue, teal, purple — none red or orange, so the selection's red outline and band
# and the target's orange outline stay visible on every part (Vega's default third colour is red: the MLP bars)
PART_COLOURS = {"block": "#4c78a8", "attention": "#72b7b2", "mlp": "#b279a2"}
LAYER_SELECTION = "layer_pick"                        # the layer bars' point selection (click picks a layer)


@dataclass(frozen=True)
class Outline:
    """How the neuron maps mark the neurons a plan takes: the histogram's name for them, colour and stroke dash."""

    fate: str
    colour: str
    dash: tuple[int, ...]


TARGET_OUTLINE = Outline(GOES, GOING_COLOUR, (4, 3))
SELECTION_OUTLINE = Outline(PICKED, SELECTED_COLOUR, (1, 0))


@dataclass
class UnitMap:
    """One metric's scores for one unit kind, with how many tokens (of which text) and seconds they took."""

    scores: UnitScores
    tokens: int
    seconds: float
    text: str = ""


def compute_unit_map(model: nn.Module, tokenizer: Any, kind: str, metric: str, blocks: Any,
                     batch_size: int = 4, progress: Callable[[int, int], None] | None = None) -> UnitMap:
    """Run one neuron or layer metric (or a head one: the head maps' loss-impact job) over the text's blocks
    (`TextBlocks`); `progress(done, total)` hears of each unit loss impact switches off (raise from it to stop)."""
    start = time.perf_counter()
    batches, loss_batches, tokens = None, None, 0
    if needs_data([metric]):
        batches = prepare_batches(blocks.dataloader(batch_size=batch_size))
        loss_batches = batches
        if not model_heads(model).adapter.is_causal(model.config):
            loss_batches = masked_lm_batches(batches, getattr(tokenizer, "mask_token_id", None))
        tokens = blocks.num_tokens
    scores = compute_scores(model, [metric], batches, loss_data=loss_batches, kind=kind, progress=progress)[metric]
    return UnitMap(scores, tokens, time.perf_counter() - start, blocks.source if tokens else "")


def neurons_going(plan: PruningPlan | None, scores: UnitScores) -> torch.Tensor:
    """[layers, neurons] bool: the active neurons `plan` removes (those of a removed block or MLP part included)."""
    going = torch.zeros(scores.values.shape, dtype=torch.bool)
    if plan is None:
        return going
    for layer, units in plan.neurons.items():
        going[layer, list(units)] = True
    for layer, parts in plan.layers.items():
        if "block" in parts or "mlp" in parts:
            going[layer] = True
    return going & ~torch.isnan(scores.values)


def neuron_percentiles(scores: UnitScores, percentiles: tuple[int, ...] = PERCENTILES,
                       plan: PruningPlan | None = None) -> pd.DataFrame:
    """Long frame (layer, percentile, value, active, removed, going): each layer's score quantiles over its active
    neurons; `removed` is the share of the neurons nearest that percentile (by rank in the layer) that `plan`
    removes, and `going` marks the cells where most of them go."""
    going = neurons_going(plan, scores)
    grid = torch.tensor(percentiles, dtype=torch.float64)
    rows = []
    for layer, values in enumerate(scores.values):
        alive = ~torch.isnan(values)
        live = values[alive]
        # each active neuron's rank percentile in its layer, assigned to the nearest grid percentile
        order = torch.argsort(torch.argsort(live, stable=True))
        position = order.double() * 100 / max(live.numel() - 1, 1)
        nearest = torch.argmin((position[:, None] - grid[None, :]).abs(), dim=1)
        gone = going[layer][alive]
        for index, p in enumerate(percentiles):
            value = float(torch.quantile(live, p / 100)) if live.numel() else float("nan")
            members = nearest == index
            removed = float(gone[members].double().mean()) if bool(members.any()) else 0.0
            rows.append({"layer": layer, "percentile": p, "value": value, "active": int(live.numel()),
                         "removed": removed, "going": removed >= 0.5})
    return pd.DataFrame(rows)


def neuron_histograms(scores: UnitScores, plan: PruningPlan | None = None, bins: int = HISTOGRAM_BINS,
                      cut: bool = False, goes: str = GOES) -> pd.DataFrame:
    """Long frame of each layer's score histogram over its active neurons (bins shared by all layers): rows
    (row="bin", layer, start, end, fate, count) with fate kept / `goes` (taken by `plan`); with `cut`, one more row
    (row="cut", layer, start) per layer at the highest score the plan removes there (meaningful when the scores
    are the ones the plan ranked by)."""
    going = neurons_going(plan, scores)
    live = scores.values[~torch.isnan(scores.values)]
    low, high = (float(live.min()), float(live.max())) if live.numel() else (0.0, 1.0)
    high = high if high > low else low + 1.0
    width = (high - low) / bins
    rows: list[dict[str, Any]] = []
    for layer, values in enumerate(scores.values):
        alive = ~torch.isnan(values)
        index = ((values[alive] - low) / width).floor().clamp(0, bins - 1).long()
        for fate, mask in ((STAYS, ~going[layer][alive]), (goes, going[layer][alive])):
            counts = torch.bincount(index[mask], minlength=bins)
            rows += [{"row": "bin", "layer": layer, "start": low + b * width, "end": low + (b + 1) * width,
                      "fate": fate, "count": int(c)} for b, c in enumerate(counts.tolist()) if c]
        removed = values[going[layer]]
        if cut and 0 < removed.numel() < int(alive.sum()):          # a layer partly cut (not a removed block)
            rows.append({"row": "cut", "layer": layer, "start": float(removed.max()), "end": float(removed.max()),
                         "fate": goes, "count": 0})
    return pd.DataFrame(rows, columns=["row", "layer", "start", "end", "fate", "count"])


def going_by_layer(plan: PruningPlan | None, scores: UnitScores) -> pd.DataFrame:
    """Per layer: active neurons, how many the plan removes and their share (the band of the grid it outlines)."""
    going = neurons_going(plan, scores)
    active = (~torch.isnan(scores.values)).sum(dim=1)
    removed = going.sum(dim=1)
    return pd.DataFrame({"layer": range(scores.num_layers), "active": active.tolist(), "removed": removed.tolist(),
                         "share": [r / a if a else 0.0 for r, a in zip(removed.tolist(), active.tolist())]})


def neuron_extremes(scores: UnitScores, count: int = 10) -> pd.DataFrame:
    """The `count` lowest- and highest-scoring active neurons: end, layer, neuron, score."""
    frame = scores.to_frame()
    live = frame[~frame["pruned"]].sort_values(scores.metric, kind="stable")
    low = live.head(count).assign(end="lowest")
    high = live.tail(count).iloc[::-1].assign(end="highest")
    return pd.concat([low, high])[["end", "layer", "neuron", scores.metric]].reset_index(drop=True)


def layer_frame(scores: UnitScores, removed: Mapping[int, list[str]] | None = None,
                selected: Iterable[int] = ()) -> pd.DataFrame:
    """Long frame (layer, part, value, shown, going, selected) of a layer metric (`shown`: the value as a label);
    pruned parts are left out; `going` marks the parts `removed` ({layer: ["block"] or parts}, a plan's layers)
    takes — a removed block takes all three bars; `selected` marks every bar of the `selected` layers."""
    frame = scores.to_frame()
    frame = frame[~frame["pruned"]].rename(columns={scores.metric: "value"})
    removed = removed or {}
    frame["going"] = [part in removed.get(layer, ()) or "block" in removed.get(layer, ())
                      for layer, part in zip(frame["layer"], frame["part"])]
    frame["selected"] = frame["layer"].isin(list(selected))
    frame["shown"] = [short_number(v) for v in frame["value"]]
    return frame[["layer", "part", "value", "shown", "going", "selected"]].reset_index(drop=True)


def percentile_heatmap(frame: pd.DataFrame, label: str, outline: Outline = TARGET_OUTLINE) -> alt.LayerChart:
    """Layer × percentile grid, colour = the score at that percentile of the layer's active neurons; the cells
    whose neurons the plan would mostly remove (`going`) outlined (dashed orange for Prune's target, red for the
    session's selection)."""
    base = alt.Chart(frame).encode(x=alt.X("percentile:O", title="Percentile of the layer's neurons"),
                                   y=alt.Y("layer:O", title="Layer"))
    cells = base.mark_rect().encode(
        color=alt.Color("value:Q", title=label, scale=alt.Scale(scheme="viridis")),
        tooltip=["layer", "percentile", alt.Tooltip("value:Q", format=".4g"), "active",
                 alt.Tooltip("removed:Q", title=f"share {outline.fate}", format=".0%")],
    )
    going = base.transform_filter("datum.going").mark_rect(fill=None, stroke=outline.colour, strokeWidth=2.5,
                                                           strokeDash=list(outline.dash))
    # 24 pixels per layer row as a pixel height, not a step: Vega-Lite drops any fit (and warns "Dropping fit-y")
    # when a size is a step; fit-x fits the width to the page and keeps this height for the plot
    rows = frame["layer"].nunique() if len(frame) else 1
    return alt.layer(cells, going).properties(height=rows * 24, autosize=FIT_WIDTH)


def neuron_histogram_chart(frame: pd.DataFrame, label: str, columns: int = 3,
                           outline: Outline = TARGET_OUTLINE) -> alt.FacetChart:
    """Small multiples: one histogram per layer (shared bins), the neurons the plan takes stacked in the outline's
    colour over the kept ones, and a dashed rule at the cut when the frame has one."""
    fates = [STAYS, outline.fate] if (frame["fate"] == outline.fate).any() else [STAYS]   # no legend entry for none
    bars = alt.Chart().transform_filter("datum.row == 'bin'").mark_bar(binSpacing=0).encode(
        x=alt.X("start:Q", title=label, bin="binned"), x2="end:Q",
        y=alt.Y("count:Q", title="Neurons", stack=True),
        color=alt.Color("fate:N", title=None, legend=alt.Legend(orient="top"),
                        scale=alt.Scale(domain=fates, range=[KEPT_COLOUR, outline.colour][:len(fates)])),
        tooltip=["layer", alt.Tooltip("start:Q", format=".4g", title="from"),
                 alt.Tooltip("end:Q", format=".4g", title="to"), "fate", "count"],
    )
    cut = alt.Chart().transform_filter("datum.row == 'cut'").mark_rule(
        color=outline.colour, strokeDash=[4, 3], strokeWidth=2).encode(
        x="start:Q", tooltip=[alt.Tooltip("start:Q", format=".4g", title="cut")])
    drawn = [bars, cut] if (frame["row"] == "cut").any() else [bars]     # an empty layer makes Vega warn
    # a facet cannot fit the page's width: 3 columns of 150 pixels fit the full-width Maps page at a 1024-pixel
    # window, 2 columns of 100 the half-width column Prune draws them in
    width = 150 if columns >= 3 else 100
    return alt.layer(*drawn, data=frame).properties(height=110, width=width).facet(
        facet=alt.Facet("layer:O", title="Layer"), columns=columns)


def layer_bars(frame: pd.DataFrame, label: str) -> alt.FacetChart:
    """One bar per layer for the block, its attention part and its MLP part, side by side; the parts Prune's target
    would remove (`going`) outlined in dashed orange, faded, with an orange ▼ above them (short bars stay visible);
    the selected layers' bars outlined in solid red on a light red band. Carries a point selection LAYER_SELECTION
    over `layer`: click picks a layer, shift-click toggles one more; it starts from the current selection so a redraw
    keeps it."""
    initial = [{"layer": int(layer)} for layer in sorted(set(frame.loc[frame["selected"], "layer"]))]
    pick = alt.selection_point(name=LAYER_SELECTION, fields=["layer"], on="click", toggle="event.shiftKey",
                               value=initial or alt.Undefined)
    base = alt.Chart().encode(x=alt.X("layer:O", title="Layer"))
    bars = base.mark_bar().encode(
        y=alt.Y("value:Q", title=label),
        color=alt.Color("part:N", sort=list(LAYER_COLUMNS), legend=None,
                        scale=alt.Scale(domain=list(PART_COLOURS), range=list(PART_COLOURS.values()))),
        stroke=alt.when("datum.selected").then(alt.value(SELECTED_COLOUR)).when("datum.going").then(
            alt.value(GOING_COLOUR)).otherwise(alt.value(None)),
        strokeWidth=alt.when("datum.selected || datum.going").then(alt.value(3)).otherwise(alt.value(0)),
        strokeDash=alt.when("datum.going && !datum.selected").then(alt.value([4, 3])).otherwise(alt.value([1, 0])),
        opacity=alt.when("datum.going").then(alt.value(0.55)).otherwise(alt.value(1.0)),
        tooltip=["layer", "part", alt.Tooltip("shown:N", title=label),
                 alt.Tooltip("going:N", title="the target removes it"), alt.Tooltip("selected:N", title="selected")],
    ).add_params(pick)
    marks = base.transform_filter("datum.going").mark_text(text="▼", color=GOING_COLOUR, dy=-10, fontSize=14).encode(
        y="value:Q")
    # a full-height band behind each selected layer: visible however short its bars, whatever their colour
    band = base.transform_filter("datum.selected").mark_rect(color=SELECTED_COLOUR, opacity=0.12)
    # layers drawn only when they have rows: an empty one makes Vega warn "Infinite extent" in the browser
    drawn = ([band] if frame["selected"].any() else []) + [bars] + ([marks] if frame["going"].any() else [])
    # three 150-pixel panels with their axes fit the 1024-pixel window's page (a facet cannot fit the width)
    return alt.layer(*drawn, data=frame).properties(height=200, width=150).facet(
        column=alt.Column("part:N", sort=list(LAYER_COLUMNS), title=None))
