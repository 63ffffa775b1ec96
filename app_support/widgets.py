"""Streamlit pieces more than one page draws: the clickable head map and the selected-heads list."""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from sentinel.metrics.scores import HeadScores
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
    """The Maps page for neurons (percentile grid + lowest/highest table) or layers (bars per part)."""
    from app_support.state import report_errors
    from sentinel.ui.analysis import block_size_for
    from sentinel.ui.unit_maps import (LAYER_METRICS, NEURON_METRICS, compute_unit_map, layer_bars, layer_frame,
                                       neuron_extremes, neuron_percentiles, percentile_heatmap)

    metrics = NEURON_METRICS if kind == "neuron" else LAYER_METRICS
    metric = st.segmented_control("Metric", list(metrics), format_func=lambda m: metrics[m][0],
                                  default=list(metrics)[0], key=f"{kind}_map_metric", required=True)
    label, legend = metrics[metric]
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
    if kind == "neuron":
        st.altair_chart(percentile_heatmap(neuron_percentiles(found.scores), label), width="stretch",
                        key="neuron_map_chart")
        st.caption(f"{legend} Each row is a layer; each cell is the score below which that share of the layer's "
                   "active neurons fall, so a row's colours show how the layer's neurons spread. Weight magnitude "
                   "is what Prune's target ranks neurons by: the lowest go first.")
        st.markdown("**Lowest- and highest-scoring neurons**")
        st.dataframe(neuron_extremes(found.scores), hide_index=True, key="neuron_extremes")
    else:
        st.altair_chart(layer_bars(layer_frame(found.scores), label), width="stretch", key="layer_map_chart")
        st.caption(f"{legend} Left to right: the whole block, its attention part, its MLP part. Block influence "
                   "is what Prune's target ranks layers by: the lowest go first.")
    where = f" over {found.tokens:,} tokens of {state.text.name}" if found.tokens else " from the weights alone"
    st.caption(f"Computed on your model ({len(working.steps)} pruning steps){where} in {found.seconds:.2f} s.")
    st.download_button("Download these scores (CSV)", found.scores.to_frame().to_csv(index=False).encode("utf-8"),
                       file_name=f"{kind}_{metric}_scores.csv", mime="text/csv", icon=":material/download:",
                       key=f"{kind}_scores_csv")
