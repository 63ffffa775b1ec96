"""Models: loading and saving, the HeadLayout, and one adapter per architecture family."""

from sentinel.models.heads import ModelHeads, get_layout, model_heads
from sentinel.models.layout import HeadLayout, HeadWeights
from sentinel.models.loading import BUNDLED_MODEL_DIR, LoadedModel, load_model, pruning_record, save_model

__all__ = [
    "BUNDLED_MODEL_DIR", "HeadLayout", "HeadWeights", "LoadedModel", "ModelHeads",
    "get_layout", "load_model", "model_heads", "pruning_record", "save_model",
]
