"""A new session's first head map, drawn from the disk cache before torch, transformers and the model load.

Imports streamlit, pandas, Altair and the cache reader only (no torch), so the Maps page can put the
bundled model's cached map on screen about as soon as the browser connects; the page then loads the model
and replaces it with the interactive map (selection, Prune's preview) in the same run. Anything other than
a brand-new session on the default map (a restored page address, another text, a pruned model, a cache
miss) draws nothing here and takes the usual path.
"""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from sentinel.charts import METRICS, head_frame, head_heatmap
from sentinel.ui.choices import MAP_METRIC, MIN_STABLE_TOKENS, STATE_KEY, URL_KEY
from sentinel.ui.maps_cache import first_visit_map

UNITS_KEY, METRIC_KEY = "maps_kind", "map_metric"      # the Maps page's Units and Metric controls


def map_title(metric: str, tokens: int) -> str:
    """The head map's title: the metric, flagged when the text is too short for a stable map."""
    return METRICS[metric].label + (f" (only {tokens} tokens: unstable)" if tokens < MIN_STABLE_TOKENS else "")


def draw_cached_first_map(slot: DeltaGenerator) -> bool:
    """Draw the cached head map into `slot` when this is a new session's first run (nothing chosen yet, no
    page address to restore) and the cache has the map it would show; True when drawn."""
    if STATE_KEY in st.session_state or URL_KEY in st.query_params:
        return False
    if st.session_state.get(UNITS_KEY, "head") != "head":
        return False
    metric = st.session_state.get(METRIC_KEY, MAP_METRIC)
    found = first_visit_map(metric) if metric in METRICS else None
    if found is None:
        return False
    frame = head_frame(found.values, {})            # a new session: nothing pruned, nothing selected yet
    slot.altair_chart(head_heatmap(frame, METRICS[metric], map_title(metric, found.tokens)), width="stretch")
    return True
