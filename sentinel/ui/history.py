"""Tables of the experiment store's records for the Experiments page (plain pandas, no Streamlit)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from sentinel.store import ExperimentRecord, MetricPoint

# Summary keys, in order of preference, that hold a run's final perplexity (after fine-tuning when it had any).
PERPLEXITY_KEYS = ("perplexity_after", "final_perplexity", "val_perplexity", "perplexity", "perplexity_before")


def final_perplexity(summary: Mapping[str, Any]) -> float | None:
    """The run's last measured perplexity from its summary, or None when it recorded none."""
    for key in PERPLEXITY_KEYS:
        value = summary.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None


def experiments_frame(records: Iterable[ExperimentRecord]) -> pd.DataFrame:
    """One row per experiment: when, what, its main settings and final perplexity."""
    rows = []
    for r in records:
        rows.append({
            "id": r.id, "name": r.name, "kind": r.kind, "status": r.status, "model": r.model,
            "created": datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M"),
            "strategy": r.config.get("strategy"), "pruning_ratio": r.config.get("pruning_ratio"),
            "steps": r.config.get("steps", r.config.get("max_steps")),
            "distill": r.config.get("distill"), "perplexity": final_perplexity(r.summary),
        })
    return pd.DataFrame(rows)


def level_frame(records: Iterable[ExperimentRecord]) -> pd.DataFrame:
    """(strategy, level, perplexity) for every run that recorded a strategy, a ratio and a perplexity."""
    rows = []
    for r in records:
        strategy, level = r.config.get("strategy"), r.config.get("pruning_ratio")
        ppl = final_perplexity(r.summary)
        if strategy and isinstance(level, (int, float)) and ppl is not None:
            rows.append({"strategy": str(strategy), "level": float(level), "perplexity": ppl, "run": r.id})
    return pd.DataFrame(rows, columns=["strategy", "level", "perplexity", "run"]).sort_values(["strategy", "level"])


def curves_frame(curves: Mapping[str, list[MetricPoint]]) -> pd.DataFrame:
    """Metric time series as one wide table indexed by step (one column per metric)."""
    if not curves:
        return pd.DataFrame()
    series = {name: pd.Series({p.step: p.value for p in points}, dtype=float) for name, points in curves.items()}
    frame = pd.DataFrame(series)
    frame.index.name = "step"
    return frame.reset_index()
