"""Sentinel dashboard: navigation only; every page lives in app_pages/ and every computation in `sentinel`.

`streamlit run app.py` first imports this file to find `app`, an st.App whose lifespan warms the process
(torch, transformers and the bundled model load while the first browser is still connecting); then it
runs the file as the script of every browser session, where `__name__ == "__main__"`.

The folder is app_pages/, not pages/: Streamlit treats a pages/ folder next to the entry point as legacy
auto-discovered pages until some session has run st.navigation, so the first bookmarked page URL
opened after a restart (e.g. a fine-tune job link) would show "Page not found" or skip this navigation.
"""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import streamlit as st


def main() -> None:
    """One run for one browser session: page settings, the navigation, the chosen page."""
    st.set_page_config(page_title="Sentinel", page_icon=":material/content_cut:", layout="wide")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # No torch import here: the Maps page draws a new session's cached map before torch is loaded;
    # app_support.state.dashboard() sets torch's threads on the pages' first use of it.
    pages = [
        st.Page("app_pages/model.py", title="Model", icon=":material/memory:", default=True,
                help="Choose the model to explore: the bundled demo model, a local folder, a saved pruned model "
                     "or a hub id."),
        st.Page("app_pages/head_maps.py", title="Maps", icon=":material/grid_on:",
                help="See how each attention head, MLP neuron and layer behaves on a sample text; pick heads by "
                     "clicking them."),
        st.Page("app_pages/prune.py", title="Prune", icon=":material/content_cut:",
                help="Switch heads off by strategy and ratio or by your selection, or remove heads, neurons and layers "
                     "to meet a size target; compare before and after; save or export."),
        st.Page("app_pages/weights.py", title="Weights", icon=":material/blur_on:",
                help="Zero individual weights (magnitude, Wanda, SNIP, 2:4) on a copy; sizes, perplexity, speed."),
        st.Page("app_pages/finetune.py", title="Fine-tune", icon=":material/model_training:",
                help="Train the pruned model in the background to win back quality; watch it live."),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:",
                help="Up to four models of any kind (base, pruned, fine-tuned, saved, sparse): the same prompt's text "
                     "side by side, with perplexity, size and measured speed."),
        st.Page("app_pages/review.py", title="Review", icon=":material/fact_check:",
                help="A one-page verdict on your pruned model against thresholds you set, to download and share."),
        st.Page("app_pages/experiments.py", title="Experiments", icon=":material/history:",
                help="Every recorded run: settings, pruned heads, curves, final numbers and samples."),
    ]
    page = st.navigation(pages)
    from app_support.tour import show_tour   # Streamlit only: no torch before the page draws

    show_tour(page.url_path)
    page.run()


@asynccontextmanager
async def warm_up(_app: st.App) -> AsyncIterator[None]:
    """st.App lifespan: run app_support.warmup.preload in a thread, so the server answers at once.

    Nothing from `sentinel` is imported here: importing it pulls in torch and would hold up the server.
    """
    def preload() -> None:
        from app_support.warmup import preload as load

        load()

    threading.Thread(target=preload, name="sentinel-warm-up", daemon=True).start()
    yield


if __name__ == "__main__":
    main()
else:
    app = st.App("app.py", lifespan=warm_up)
