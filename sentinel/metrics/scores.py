"""UnitScores: one metric's values over ORIGINAL (layer, unit) indices of one unit kind, NaN where a unit is pruned.

Kinds: "head" ([layers, heads]; `HeadScores` is the same class), "neuron" ([layers, neurons]) and
"layer" ([layers, 3]: the whole block, its attention part, its MLP part — `LAYER_COLUMNS`).
A pruned unit (masked or removed) has no score: it is NaN in the tensor, null in JSON and
`pruned=True` in the DataFrame, never 0, so it cannot be mistaken for an unimportant live unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from sentinel.errors import SentinelError
from sentinel.models.state import model_state
from sentinel.pruning.plan import HeadPlan

UNIT_KINDS = ("head", "neuron", "layer")
LAYER_COLUMNS = ("block", "attention", "mlp")


@dataclass
class UnitScores:
    """Per-unit values of one metric; `values` is [layers, units] float64 on CPU, NaN = pruned (no score)."""

    metric: str
    values: torch.Tensor          # [layers, units]
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "head"

    def __post_init__(self) -> None:
        if self.values.dim() != 2:
            raise SentinelError(f"UnitScores({self.metric!r}) needs a [layers, {self.kind}s] tensor, got shape "
                                f"{tuple(self.values.shape)}.")
        if self.kind not in UNIT_KINDS:
            raise SentinelError(f"Unknown unit kind {self.kind!r}; use one of {', '.join(UNIT_KINDS)}.")
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
        """Plain dict for JSON and the experiment store (pruned units as null)."""
        data = {"metric": self.metric, "values": self.matrix(), "meta": dict(self.meta)}
        if self.kind != "head":
            data["kind"] = self.kind
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnitScores:
        """Inverse of `to_dict`."""
        rows = [[math.nan if v is None else float(v) for v in row] for row in data["values"]]
        return cls(data["metric"], torch.tensor(rows, dtype=torch.float64), dict(data.get("meta", {})),
                   data.get("kind", "head"))

    def to_frame(self) -> pd.DataFrame:
        """Long form: one row per original (layer, unit) with columns layer, <kind>, pruned, <metric>
        (layer scores name their column block / attention / mlp)."""
        layers, units = self.values.shape
        flat = self.values.flatten().tolist()
        names = list(LAYER_COLUMNS) if self.kind == "layer" else list(range(units))
        return pd.DataFrame({
            "layer": [layer for layer in range(layers) for _ in range(units)],
            "part" if self.kind == "layer" else self.kind: [names[u] for _ in range(layers) for u in range(units)],
            "pruned": [math.isnan(v) for v in flat],
            self.metric: flat,
        })


HeadScores = UnitScores


def active_grid(model: nn.Module, kind: str = "head") -> torch.Tensor:
    """[layers, units] bool: True for units present and not masked (original indices).

    For kind "layer" the columns are block, attention, mlp: a part is active when present and unmasked,
    a block when it is still in the model and one of its parts is active.
    """
    state = model_state(model)
    if kind == "layer":
        grid = torch.zeros(state.num_layers, len(LAYER_COLUMNS), dtype=torch.bool)
        for layer in range(state.num_layers):
            for part in state.active(layer, "part"):
                grid[layer, 1 + part] = True
            grid[layer, 0] = bool(grid[layer, 1:].any())
        return grid
    grid = torch.zeros(state.num_layers, state.total(kind), dtype=torch.bool)
    for layer in range(state.num_layers):
        grid[layer, state.active(layer, kind)] = True
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
