"""Warm the dashboard process at server start, before any browser connects.

`streamlit run app.py` finds the `st.App` that app.py builds when it is imported; its lifespan runs
`preload` in a background thread when the server starts: importing torch and transformers and loading
the bundled model into the process-wide cache are most of a cold start. A visitor who arrives earlier
simply waits for the same imports and the same cached load.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def preload() -> None:
    """Import what every page needs and load the bundled model into the shared cache."""
    from app_support import first_map  # noqa: F401  (pandas, Altair, the cache reader: a new session's first map)
    from sentinel.errors import SentinelError
    from app_support import widgets  # noqa: F401  (Altair, pandas, the metrics: what the first page imports)
    from app_support.state import bundled_model_available, configure_torch_threads, shared_base_model

    configure_torch_threads()
    if not bundled_model_available():
        logger.info("No bundled model to preload; the first visitor chooses a model on the Model page.")
        return
    try:
        shared_base_model(None, "auto", "auto")
    except SentinelError as error:   # the Model page shows the same error to the first visitor
        logger.warning("Could not preload the bundled model: %s", error)
        return
    logger.info("Preloaded the bundled model")
