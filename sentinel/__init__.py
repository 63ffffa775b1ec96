"""Sentinel: prune transformer language models — attention heads, MLP neurons and whole layers — by mask or by removal."""

from sentinel.models import HeadLayout, LoadedModel, get_layout, load_model, pruning_record, save_model
from sentinel.pruning import (
    PruneMode, PruningPlan, active_heads, active_layers, active_neurons, apply_plan, mask_heads, mask_layers,
    mask_neurons, present_heads, present_neurons, remove_heads, remove_layers, remove_neurons, temporarily_masked,
    unmask_heads, unmask_layers, unmask_neurons,
)

__version__ = "0.1.0"

__all__ = [
    "HeadLayout", "LoadedModel", "PruneMode", "PruningPlan", "active_heads", "active_layers", "active_neurons",
    "apply_plan", "get_layout", "load_model", "mask_heads", "mask_layers", "mask_neurons", "present_heads",
    "present_neurons", "pruning_record", "remove_heads", "remove_layers", "remove_neurons", "save_model",
    "temporarily_masked", "unmask_heads", "unmask_layers", "unmask_neurons",
]
