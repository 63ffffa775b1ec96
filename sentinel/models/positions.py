"""How long a sequence a model takes: the cap its position embeddings set (none for a config without one)."""

from __future__ import annotations

from torch import nn


def max_positions(model: nn.Module) -> int | None:
    """The model's position limit (`max_position_embeddings`, or GPT-2's `n_positions`); None when it has none."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(limit) if limit else None


def cap_to_positions(model: nn.Module, wanted: int) -> int:
    """`wanted` tokens, capped by the model's position limit (unchanged when it has none)."""
    limit = max_positions(model)
    return min(wanted, limit) if limit else wanted
