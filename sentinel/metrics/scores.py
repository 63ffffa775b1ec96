"""HeadScores: one metric's per-head values over ORIGINAL (layer, head) indices, NaN where a head is pruned.

A pruned head (masked or removed) has no score: it is NaN in the tensor, null in JSON and
`pruned=True` in the DataFrame, never 0, so it cannot be mistaken for an unimportant live head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from sentinel.errors import SentinelError
from sentinel.models.heads import model_heads
from sentinel.pruning.masks import active_heads
from sentinel.pruning.plan import HeadPlan


@dataclass
class HeadScores:
    """Per-head values of one metric; `values` is [layers, heads] float64 on CPU, NaN = pruned (no score)."""

    metric: str
    values: torch.Tensor          # [layers, heads]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.dim() != 2:
            raise SentinelError(f"HeadScores({self.metric!r}) needs a [layers, heads] tensor, got shape "
                                f"{tuple(self.values.shape)}.")
        self.values = self.values.detach().to("cpu", torch.float64)

    @property
    def num_layers(self) -> int:
        return self.values.shape[0]

    @property
    def num_heads(self) -> int:
        return self.values.shape[1]

    @property
    def scored(self) -> torch.Tensor:
        """[layers, heads] bool: True where the head has a score (is active)."""
        return ~torch.isnan(self.values)

    def matrix(self) -> list[list[float | None]]:
        """Nested lists for JSON, NaN as None."""
        return [[None if math.isnan(v) else float(v) for v in row] for row in self.values.tolist()]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and the experiment store (pruned heads as null)."""
        return {"metric": self.metric, "values": self.matrix(), "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadScores:
        """Inverse of `to_dict`."""
        rows = [[math.nan if v is None else float(v) for v in row] for row in data["values"]]
        return cls(data["metric"], torch.tensor(rows, dtype=torch.float64), dict(data.get("meta", {})))

    def to_frame(self) -> pd.DataFrame:
        """Long form: one row per original (layer, head) with columns layer, head, pruned, <metric>."""
        layers, heads = self.values.shape
        flat = self.values.flatten().tolist()
        return pd.DataFrame({
            "layer": [layer for layer in range(layers) for _ in range(heads)],
            "head": [head for _ in range(layers) for head in range(heads)],
            "pruned": [math.isnan(v) for v in flat],
            self.metric: flat,
        })


def active_grid(model: nn.Module) -> torch.Tensor:
    """[layers, heads] bool: True for heads present and not masked (original indices)."""
    heads = model_heads(model)
    grid = torch.zeros(heads.num_layers, heads.num_heads, dtype=torch.bool)
    for layer, live in active_heads(model).items():
        grid[layer, live] = True
    return grid


def as_score_tensor(scores: HeadScores | torch.Tensor | pd.DataFrame, what: str = "scores") -> torch.Tensor:
    """A [layers, heads] float64 tensor from HeadScores, a tensor, or a layer x head DataFrame."""
    if isinstance(scores, HeadScores):
        return scores.values
    if isinstance(scores, pd.DataFrame):
        if {"layer", "head"} <= set(scores.columns):
            raise SentinelError(f"{what}: pass a layer x head DataFrame (index = layers, columns = heads), "
                                "or HeadScores; long-form frames from HeadScores.to_frame() are for display.")
        scores = torch.tensor(scores.to_numpy(dtype=float), dtype=torch.float64)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else ""
        raise SentinelError(f"{what}: expected a [layers, heads] tensor, HeadScores or DataFrame, got "
                            f"{type(scores).__name__}{shape}.")
    return scores.detach().to("cpu", torch.float64)


def plan_from_grid(grid: torch.Tensor) -> HeadPlan:
    """{layer: [heads]} of the True cells of a [layers, heads] bool grid (layers without any are left out)."""
    return {layer: row.nonzero().flatten().tolist() for layer, row in enumerate(grid) if bool(row.any())}
