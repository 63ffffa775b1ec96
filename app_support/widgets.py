"""Streamlit pieces more than one page draws: the clickable head map and the selected-heads list."""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from sentinel.metrics.scores import HeadScores, UnitScores
from sentinel.pruning.plan import PruningPlan
from app_support.state import keep_url
from sentinel.ui.charts import METRICS, SELECTION_NAME, head_frame, head_heatmap, pruned_first
from sentinel.ui.selection import HeadKey, apply_chart_event, forget_seen, head_label, parse_head_label, set_heads
from sentinel.ui.session import WorkingModel
from sentinel.ui.state import DashboardState

LIST_KEY = "selected_heads_list"


def read_chart_clicks(state: DashboardState, working: WorkingModel, chart_key: str) -> None:
    """Fold the map's last click (kept by Streamlit under `chart_key`) into the session's selection.

    Done before the chart is drawn, so the outline shows the selection the click made.
    """
    event = st.session_state.get(chart_key)
    if event is None:                 # the chart widget is new on this page view: no click yet
        state.selection = forget_seen(state.selection)
        return
    layout = working.base.layout
    points = event["selection"].get(SELECTION_NAME, [])
    state.selection = apply_chart_event(state.selection, points, layout.num_layers, layout.num_heads,
                                        selectable=working.active())


def head_map(state: DashboardState, working: WorkingModel, scores: HeadScores, metric: str, chart_key: str,
             title: str = "", preview: Iterable[HeadKey] = ()) -> None:
    """The layer × head heat map of `scores`, pruned heads marked, `preview` heads outlined in dashed orange;
    click picks a head, shift-click adds one."""
    read_chart_clicks(state, working, chart_key)
    keep_url(state)                       # the click may have changed the selection the address carries
    info = METRICS[metric]
    frame = head_frame(scores.values.tolist(), working.status(), state.selection.heads, preview)
    st.altair_chart(head_heatmap(frame, info, title), key=chart_key, on_select="rerun",
                    selection_mode=[SELECTION_NAME], width="stretch")
    outlines = "Red outline: selected heads. " + ("Dashed orange outline: the heads pressing Prune would prune. "
                                                  if frame["preview"].any() else "")
    st.caption(f"**{info.label}.** {info.legend} {pruned_first(metric)} Grey cells marked ✕ are pruned heads "
               f"(no score). {outlines}Click a cell to select that head; shift-click to add or drop more.")


def selection_list(state: DashboardState, working: WorkingModel) -> None:
    """The selected heads as an editable list (the same selection the map and the Prune page use)."""
    active = working.active()
    st.session_state[LIST_KEY] = [head_label(k) for k in state.selection.heads]

    def edited() -> None:
        chosen = [parse_head_label(label) for label in st.session_state[LIST_KEY]]
        state.selection = set_heads(state.selection, chosen, selectable=active)

    st.multiselect("Selected heads", [head_label(k) for k in active], key=LIST_KEY, on_change=edited,
                   placeholder="Click cells in the map, or pick heads here",
                   help="Layer L, head H, in the model's original numbering.")


def unit_maps_view(state: DashboardState, working: WorkingModel, kind: str) -> None:
    """The Maps page for neurons (percentile grid, histograms per layer, lowest/highest table) or layers (bars per
    part), with what Prune's target would remove outlined when it has a prediction for the model as it is now."""
    from app_support.state import last_budget_preview, report_errors
    from sentinel.ui.analysis import block_size_for
    from sentinel.ui.unit_maps import LAYER_METRICS, NEURON_METRICS, compute_unit_map, neuron_extremes

    metrics = NEURON_METRICS if kind == "neuron" else LAYER_METRICS
    metric = st.segmented_control("Metric", list(metrics), format_func=lambda m: metrics[m][0],
                                  default=list(metrics)[0], key=f"{kind}_map_metric", required=True)
    label, _ = metrics[metric]
    key = ("unit-map", kind, metric, id(working), working.version, state.text.digest, state.map_samples,
           state.map_seq_len)
    if key not in state.caches:
        if metric == "loss_impact" and not st.button("Compute loss impact", key="layer_loss_impact_run",
                                                     type="primary", icon=":material/play_arrow:"):
            st.info("Loss impact switches each layer and each of its parts off alone and measures the loss again: "
                    "one pass over the text each.")
            return
        with report_errors(f"computing the {kind} map"), st.spinner(f"Computing {label.lower()}…"):
            size = block_size_for(working.model, state.map_seq_len)
            blocks = state.text.blocks(working.tokenizer, size, state.map_samples * size)
            state.caches[key] = compute_unit_map(working.model, working.tokenizer, kind, metric, blocks)
    found = state.caches.get(key)
    if found is None:
        return
    preview = last_budget_preview(state, working)
    target = preview.settings.label() if preview is not None else None
    plan = preview.result.plan if preview is not None else None
    if kind == "neuron":
        neuron_map(found.scores, metric, plan, target, key_prefix="neuron_map")
        st.markdown("**Lowest- and highest-scoring neurons**")
        st.dataframe(neuron_extremes(found.scores), hide_index=True, key="neuron_extremes")
    else:
        layer_map(found.scores, metric, plan, target, key_prefix="layer_map")
    where = f" over {found.tokens:,} tokens of {state.text.name}" if found.tokens else " from the weights alone"
    st.caption(f"Computed on your model ({len(working.steps)} pruning steps){where} in {found.seconds:.2f} s.")
    st.download_button("Download these scores (CSV)", found.scores.to_frame().to_csv(index=False).encode("utf-8"),
                       file_name=f"{kind}_{metric}_scores.csv", mime="text/csv", icon=":material/download:",
                       key=f"{kind}_scores_csv")


NO_TARGET = ("Set a target on the Prune page ('By a size or FLOPs target') to see here, outlined in dashed orange, "
             "what it would remove.")


def neuron_map(scores: UnitScores, metric: str, plan: PruningPlan | None, target: str | None, key_prefix: str,
               columns: int = 3) -> None:
    """Neurons: the layer × percentile grid and a histogram per layer; `plan`'s neurons outlined / stacked in orange.

    The legend says which end goes first: the target ranks neurons by `BUDGET_METRICS['neuron']`, lowest first.
    """
    from sentinel.ui.budget import BUDGET_METRICS
    from sentinel.ui.unit_maps import (NEURON_METRICS, going_by_layer, neuron_histogram_chart, neuron_histograms,
                                       neuron_percentiles, percentile_heatmap)

    label, legend = NEURON_METRICS[metric]
    ranked = BUDGET_METRICS["neuron"]
    st.altair_chart(percentile_heatmap(neuron_percentiles(scores, plan=plan), label), width="stretch",
                    key=f"{key_prefix}_chart")
    order = (f"Prune's target ranks neurons by {NEURON_METRICS[ranked][0].lower()}: within each layer the lowest "
             "values (dark purple, the left of each row and of each histogram) go first." if metric == ranked else
             f"Prune's target ranks neurons by {NEURON_METRICS[ranked][0].lower()}, not by this metric, so the "
             "neurons it would remove can sit anywhere on this scale; the outlines show where they fall.")
    st.caption(f"{legend} Each row is a layer; each cell is the score below which that share of the layer's "
               f"active neurons fall, so a row's colours show how the layer's neurons spread. {order}")
    histograms = neuron_histograms(scores, plan, cut=metric == ranked)
    st.altair_chart(neuron_histogram_chart(histograms, label, columns), width="content",
                    key=f"{key_prefix}_histograms")
    if plan is None:
        st.caption(f"Histograms: how each layer's active neurons spread over the scores (the same bins in every "
                   f"layer). {NO_TARGET}")
        return
    going = going_by_layer(plan, scores)
    bands = "; ".join(f"layer {r.layer}: {r.removed} of {r.active} ({r.share:.0%})"
                      for r in going.itertuples() if r.removed) or "none"
    cut = " The dashed line is the cut: the highest score the target removes in that layer." if metric == ranked else ""
    st.caption(f"Dashed orange: the neurons Prune's target ({target}) would remove — grid cells where most of the "
               f"layer's neurons at that percentile go, and the orange part of each histogram.{cut} Neurons removed "
               f"per layer: {bands}.")


def layer_map(scores: UnitScores, metric: str, plan: PruningPlan | None, target: str | None, key_prefix: str) -> None:
    """Layers: bars per layer for the block and its attention and MLP parts; `plan`'s layers outlined in orange."""
    from sentinel.ui.budget import BUDGET_METRICS
    from sentinel.ui.unit_maps import LAYER_METRICS, layer_bars, layer_frame

    label, legend = LAYER_METRICS[metric]
    ranked = BUDGET_METRICS["layer"]
    frame = layer_frame(scores, plan.layers if plan is not None else None)
    st.altair_chart(layer_bars(frame, label), width="stretch", key=f"{key_prefix}_chart")
    order = (f"Prune's target ranks whole blocks by {LAYER_METRICS[ranked][0].lower()} (left panel): the lowest "
             "bars go first." if metric == ranked else f"Prune's target ranks whole blocks by "
             f"{LAYER_METRICS[ranked][0].lower()}, not by this metric.")
    st.caption(f"{legend} Left to right: the whole block, its attention part, its MLP part. {order}")
    if plan is None:
        st.caption(NO_TARGET)
        return
    gone = sorted(plan.layers)
    st.caption(f"Dashed orange, faded, marked ▼: the layers Prune's target ({target}) would remove — "
               + (", ".join(f"layer {layer} ({'+'.join(plan.layers[layer])})" for layer in gone) if gone
                  else "none; it removes heads or neurons only") + ".")
