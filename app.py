"""Sentinel dashboard: navigation only; every page lives in app_pages/ and every computation in `sentinel`.

The folder is app_pages/, not pages/: Streamlit treats a pages/ folder next to the entry point as legacy
auto-discovered pages until some session has run st.navigation, so the first bookmarked page URL
opened after a restart (e.g. a fine-tune job link) would show "Page not found" or skip this navigation.
"""

import logging

import streamlit as st

st.set_page_config(page_title="Sentinel", page_icon=":material/content_cut:", layout="wide")
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

from sentinel.ui.state import configure_torch_threads  # noqa: E402  (after set_page_config, Streamlit's first call)

configure_torch_threads()

PAGES = [
    st.Page("app_pages/model.py", title="Model", icon=":material/memory:", default=True,
            help="Choose the model to explore: the bundled demo model, a local folder, a saved pruned model or a hub id."),
    st.Page("app_pages/head_maps.py", title="Head maps", icon=":material/grid_on:",
            help="See how each attention head behaves on a sample text and pick heads by clicking them."),
    st.Page("app_pages/prune.py", title="Prune", icon=":material/content_cut:",
            help="Switch heads off by strategy and ratio or by your selection; compare before and after; save."),
    st.Page("app_pages/finetune.py", title="Fine-tune", icon=":material/model_training:",
            help="Train the pruned model in the background to win back quality; watch it live."),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:",
            help="One prompt, same settings and seed: base, pruned and fine-tuned text side by side."),
    st.Page("app_pages/experiments.py", title="Experiments", icon=":material/history:",
            help="Every recorded run: settings, pruned heads, curves, final numbers and samples."),
]

st.navigation(PAGES).run()
