"""Model size: parameter count and bytes of weights, counted the same way everywhere."""

from __future__ import annotations

from torch import nn

from sentinel.models.int8 import int8_counts


def parameter_count(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once; an int8 model's packed matrices included)."""
    count = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return count + int8_counts(model)[0]


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by distinct parameters and persistent buffers (and an int8 model's matrices with their scales)."""
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() * p.element_size() for p in params.values())
    total += int8_counts(model)[1]
    return total + sum(b.numel() * b.element_size() for b in model.buffers() if id(b) not in params)
