"""Model size: parameter count and bytes of weights, counted the same way everywhere."""

from __future__ import annotations

from torch import nn


def parameter_count(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by distinct parameters and persistent buffers."""
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() * p.element_size() for p in params.values())
    return total + sum(b.numel() * b.element_size() for b in model.buffers() if id(b) not in params)
