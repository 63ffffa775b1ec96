"""The first-run tour for demos: three steps (load → prune → compare) above every page until it is hidden.

Streamlit only (no torch): it is drawn before the page runs, so a new visitor sees it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

HIDDEN_KEY = "tour_hidden"
URL_KEY = "tour"         # ?tour=off opens the app without it (a projector that shows a prepared session)


@dataclass(frozen=True)
class TourStep:
    page: str          # the page file, for its link
    url_path: str      # the page's address ("" for the Model page, the default), to mark where the visitor is
    title: str
    what: str


TOUR = (
    TourStep("app_pages/model.py", "", "1. Load a model",
             "Start with the bundled demo model, or open a folder or hub id, and press Load."),
    TourStep("app_pages/prune.py", "prune", "2. Prune it",
             "Pick a strategy and a share of heads (or a size target) and press Prune; the map shows what goes."),
    TourStep("app_pages/compare.py", "compare", "3. Compare",
             "Generate from the base and the pruned model side by side, with perplexity, size and speed."),
)


def show_tour(current_url_path: str) -> None:
    """The tour, with the current page's step marked, until the visitor hides it (for this browser session)."""
    if st.session_state.get(HIDDEN_KEY) or st.query_params.get(URL_KEY) == "off":
        return
    with st.container(border=True, key="tour"):
        st.markdown("**New here? Three steps to a pruned model**")
        for column, step in zip(st.columns(len(TOUR)), TOUR):
            here = step.url_path == current_url_path
            column.page_link(step.page, label=step.title + (" — you are here" if here else ""),
                             icon=":material/arrow_forward:" if here else None)
            column.caption(step.what)
        if st.button("Hide the tour", key="tour_hide", icon=":material/close:"):
            st.session_state[HIDDEN_KEY] = True
            st.rerun()
