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
