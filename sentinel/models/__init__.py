"""Models: loading and saving, the HeadLayout, the pruning state (its one owner) and the gates that apply it, the FLOP
count, and one adapter per family."""

from sentinel.models.heads import ModelHeads, get_layout, model_heads
from sentinel.models.layout import HeadLayout, HeadWeights
from sentinel.models.state import ModelState, PruningState, model_state
from sentinel.models.loading import (BUNDLED_MODEL_DIR, LoadedModel, bundled_model_dir, load_model, pruning_record,
                                     save_model)

__all__ = [
    "BUNDLED_MODEL_DIR", "bundled_model_dir", "HeadLayout", "HeadWeights", "LoadedModel", "ModelHeads",
    "ModelState", "PruningState", "get_layout", "load_model", "model_heads", "model_state", "pruning_record",
    "save_model",
]
