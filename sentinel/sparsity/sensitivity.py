"""Layer sensitivity: prune each body matrix alone, measure the perplexity change, restore it exactly.

Each probe installs a magnitude mask with torch.nn.utils.prune, evaluates, folds it (prune.remove)
and copies the saved weight back into the same Parameter, so after every probe the model is bitwise
what it was. `suggest_sparsity` turns the table into per-matrix sparsities that keep the requested
average but prune the least sensitive matrices most; `sensitivity_chart` draws layer × matrix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from sentinel.sparsity.masks import is_sparse_pruned, select_masks
from sentinel.sparsity.scores import compute_scores
from sentinel.sparsity.targets import SparsityError, Target, find_targets

logger = logging.getLogger(__name__)


@dataclass
class SensitivityRow:
    """Perplexity with one matrix pruned to `sparsity` alone."""

    name: str
    layer: int | None
    matrix: str
    size: int
    sparsity: float
    perplexity: float
    delta: float                      # perplexity - baseline

    @property
    def label(self) -> str:
        """The matrix as people read it: 'layer 4 attn.c_attn' by the block's original layer (the module path's
        index differs once blocks were removed), or the module path for a matrix outside the blocks."""
        return self.name if self.layer is None else f"layer {self.layer} {self.matrix}"


@dataclass
class SensitivityResult:
    baseline: float
    levels: list[float]
    method: str
    rows: list[SensitivityRow] = field(default_factory=list)

    def at(self, level: float) -> list[SensitivityRow]:
        return [r for r in self.rows if math.isclose(r.sparsity, level)]

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "levels": self.levels, "method": self.method,
                "rows": [asdict(r) for r in self.rows]}


def _probe(target: Target, keep: torch.Tensor, evaluate: Callable[[], float]) -> float:
    """Prune one matrix with prune.custom_from_mask, evaluate, then restore the exact weight into the same Parameter."""
    module = target.module
    saved = module.weight.detach().clone()
    prune.custom_from_mask(module, "weight", target.to_storage(keep).to(saved.device, saved.dtype))
    try:
        return evaluate()
    finally:
        prune.remove(module, "weight")
        with torch.no_grad():
            module.weight.copy_(saved)


def layer_sensitivity(model: nn.Module, evaluate: Callable[[nn.Module], float], levels: Sequence[float] = (0.1, 0.5),
                      method: str = "l1", targets: Sequence[Target] | None = None,
                      on_progress: Callable[[int, int, SensitivityRow], None] | None = None) -> SensitivityResult:
    """Perplexity per (matrix, level) with each matrix pruned alone by `method` (l1/l2/random) and restored."""
    if not levels or any(not 0 < s < 1 for s in levels):
        raise SparsityError(f"Sensitivity levels must be in (0, 1), got {list(levels)}.")
    if method not in ("l1", "l2", "random"):
        raise SparsityError(f"Sensitivity probes use l1, l2 or random masks, not {method!r}.")
    targets = find_targets(model) if targets is None else list(targets)
    if any(is_sparse_pruned(t.module) for t in targets):
        raise SparsityError("The model carries pruning masks; call make_permanent(model) before a sensitivity scan.")
    baseline = evaluate(model)
    result = SensitivityResult(baseline, list(levels), method)
    scores = compute_scores(model, targets, method)
    total = len(targets) * len(levels)
    for t in targets:
        for level in levels:
            keep = select_masks({t.name: scores[t.name]}, level)[t.name]
            ppl = _probe(t, keep, lambda: evaluate(model))
            row = SensitivityRow(t.name, t.layer, t.matrix, t.weight().numel(), level, ppl, ppl - baseline)
            result.rows.append(row)
            if on_progress is not None:
                on_progress(len(result.rows), total, row)
    return result


SUGGESTED_AVERAGE = 0.5   # the mean sparsity a suggestion keeps unless told otherwise


def suggest_sparsity(result: SensitivityResult, average: float = SUGGESTED_AVERAGE, spread: float = 0.2,
                     level: float | None = None) -> dict[str, float]:
    """Per-matrix sparsity: linear in sensitivity rank (least sensitive: average + spread, most: average − spread),
    then shifted so the size-weighted mean is `average`; each value clipped to [0, 0.95]."""
    if not 0 <= average < 1:
        raise SparsityError(f"Average sparsity must be in [0, 1), got {average}.")
    level = max(result.levels) if level is None else level
    rows = sorted(result.at(level), key=lambda r: r.delta)
    if not rows:
        raise SparsityError(f"No sensitivity rows at level {level}.")
    n = len(rows)
    raw = {r.name: average + spread * (1 - 2 * i / (n - 1)) if n > 1 else average for i, r in enumerate(rows)}
    sizes = {r.name: r.size for r in rows}
    for _ in range(20):                     # re-centre after clipping until the weighted mean matches
        clipped = {k: min(max(v, 0.0), 0.95) for k, v in raw.items()}
        mean = sum(clipped[k] * sizes[k] for k in clipped) / sum(sizes.values())
        if abs(mean - average) < 1e-6:
            break
        raw = {k: v + (average - mean) for k, v in raw.items()}
    return {k: round(v, 4) for k, v in clipped.items()}


def sensitivity_frame(result: SensitivityResult) -> Any:
    """The result as a pandas DataFrame (one row per matrix and level)."""
    import pandas as pd

    return pd.DataFrame([asdict(r) for r in result.rows])


def sensitivity_chart(result: SensitivityResult, level: float | None = None) -> Any:
    """Altair heatmap, layer × matrix, coloured by perplexity increase at `level` (default: the highest)."""
    import altair as alt

    level = max(result.levels) if level is None else level
    frame = sensitivity_frame(result)
    frame = frame[(frame["sparsity"] - level).abs() < 1e-9]
    return alt.Chart(frame, title=f"Perplexity increase with one matrix at {level:.0%} sparsity "
                                  f"(baseline {result.baseline:.2f})").mark_rect().encode(
        x=alt.X("layer:O", title="layer"),
        y=alt.Y("matrix:N", title="matrix"),
        color=alt.Color("delta:Q", title="Δ perplexity", scale=alt.Scale(scheme="orangered")),
        tooltip=["layer", "matrix", alt.Tooltip("perplexity:Q", format=".3f"),
                 alt.Tooltip("delta:Q", format="+.3f")],
    )


def sensitivity_lines(result: SensitivityResult) -> Any:
    """Altair lines: perplexity per layer with one matrix pruned alone, a colour per matrix, one panel per level,
    the unpruned perplexity as a dashed rule (the chart the dashboard and Experiments show)."""
    import altair as alt

    frame = sensitivity_frame(result)
    frame["level"] = [f"{s:.0%} sparsity" for s in frame["sparsity"]]
    frame["baseline"] = result.baseline
    lines = alt.Chart().mark_line(point=True).encode(
        x=alt.X("layer:O", title="layer"),
        y=alt.Y("perplexity:Q", title="perplexity", scale=alt.Scale(zero=False)),
        color=alt.Color("matrix:N", title="matrix pruned"),
        tooltip=["layer", "matrix", alt.Tooltip("sparsity:Q", format=".0%"), alt.Tooltip("perplexity:Q", format=".3f"),
                 alt.Tooltip("delta:Q", format="+.3f", title="Δ perplexity")],
    )
    baseline = alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.Y("mean(baseline):Q"))
    return alt.layer(lines, baseline, data=frame).facet(column=alt.Column("level:N", title=None)).properties(
        title=f"Perplexity with one matrix pruned alone (unpruned: {result.baseline:.2f})")
