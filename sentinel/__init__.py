"""Sentinel: prune the attention heads of transformer language models, by mask or by removal."""

from sentinel.models import HeadLayout, LoadedModel, get_layout, load_model, pruning_record, save_model
from sentinel.pruning import active_heads, mask_heads, present_heads, remove_heads, unmask_heads

__version__ = "0.1.0"

__all__ = [
    "HeadLayout", "LoadedModel", "active_heads", "get_layout", "load_model", "mask_heads", "present_heads",
    "pruning_record", "remove_heads", "save_model", "unmask_heads",
]
