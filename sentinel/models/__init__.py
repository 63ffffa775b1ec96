"""Models: loading and saving, the HeadLayout, the pruning state (its one owner) and the gates that apply it, the FLOP
count, and one adapter per family.

The names below are imported on first use (PEP 562), so `sentinel.models.bundled` (where the bundled model
lives) can be imported without torch: the dashboard's first map is drawn from the disk cache before torch loads.
"""

from __future__ import annotations

from sentinel.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("ModelHeads", "get_layout", "model_heads"), "sentinel.models.heads"),
    **dict.fromkeys(("HeadLayout", "HeadWeights"), "sentinel.models.layout"),
    **dict.fromkeys(("ModelState", "PruningState", "model_state"), "sentinel.models.state"),
    **dict.fromkeys(("BUNDLED_MODEL_DIR", "bundled_model_dir"), "sentinel.models.bundled"),
    **dict.fromkeys(("LoadedModel", "load_model", "pruning_record", "save_model"), "sentinel.models.loading"),
}

__all__ = [
    "BUNDLED_MODEL_DIR", "bundled_model_dir", "HeadLayout", "HeadWeights", "LoadedModel", "ModelHeads",
    "ModelState", "PruningState", "get_layout", "load_model", "model_heads", "model_state", "pruning_record",
    "save_model",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
