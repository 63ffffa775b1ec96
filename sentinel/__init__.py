"""Sentinel: prune transformer language models — attention heads, MLP neurons and whole layers — by mask or by removal.

The public names below are imported on first use (PEP 562), so `import sentinel.cli` and `sentinel --help`
do not import torch.
"""

from __future__ import annotations

from sentinel.lazy import lazy_exports

__version__ = "0.1.0"

_MODELS = ("HeadLayout", "LoadedModel", "get_layout", "load_model", "pruning_record", "save_model")
_PRUNING = (
    "PruneMode", "PruningPlan", "active_heads", "active_layers", "active_neurons", "apply_plan", "mask_heads",
    "mask_layers", "mask_neurons", "present_heads", "present_neurons", "remove_heads", "remove_layers",
    "remove_neurons", "temporarily_masked", "unmask_heads", "unmask_layers", "unmask_neurons",
)
_EXPORTS = {**{name: "sentinel.models" for name in _MODELS}, **{name: "sentinel.pruning" for name in _PRUNING}}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
