"""Head-level names kept for callers: `model_heads(model)` is the model's `ModelState` (see sentinel.models.state).

`ModelHeads` is that class; its `present(layer)` / `masked(layer)` default to heads.
"""

from __future__ import annotations

from torch import nn

from sentinel.models.layout import HeadLayout
from sentinel.models.state import ModelState, model_state

ModelHeads = ModelState


def model_heads(model: nn.Module) -> ModelState:
    """Find the model's adapter, blocks and pruning state (raises UnsupportedModelError)."""
    return model_state(model)


def get_layout(model: nn.Module) -> HeadLayout:
    """The model's HeadLayout: family, original head counts, and which heads are present now."""
    return model_state(model).layout()
