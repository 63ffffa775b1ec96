"""`RunSummary`: the one typed summary every workflow writes to the experiment store, and every reader reads.

The measured numbers have one name each: `baseline_perplexity` (the unpruned model), `perplexity_pruned`
(after pruning, before any recovery training), `perplexity_after` (the run's final model) and the parameter
counts. Anything kind-specific (the plan, the fine-tune's result, benchmark winners, plasticity cycles, output
folders) lives in `extra` and is written as top-level keys beside them, so a stored summary stays a flat
JSON object.

Records written before RunSummary existed used other names for the same numbers; `from_dict` reads those
once, here, so no reader has to guess between them (see LEGACY_KEYS).

A perplexity's 95% confidence interval, where the run measured one, is stored beside it under the number's key
with `_ci` appended, as [low, high] (`perplexity_after_ci`, `protocol_perplexity_after_ci`); `intervals` holds the
one that belongs to the number each canonical field was read from. Runs recorded before intervals were kept have
none, and read as such.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# Older names of the canonical numbers, in order of preference, read only when the canonical key is missing.
# protocol_* are the dashboard's fixed-protocol measurements, preferred where a record holds them.
LEGACY_KEYS: dict[str, tuple[str, ...]] = {
    "perplexity_pruned": ("protocol_perplexity_before", "perplexity_pruned", "perplexity_before"),
    "perplexity_after": ("protocol_perplexity_after", "perplexity_after", "final_perplexity", "val_perplexity",
                         "perplexity"),
    "baseline_perplexity": ("baseline_perplexity",),
}


CI_SUFFIX = "_ci"


@dataclass
class RunSummary:
    """What a run measured, under one name per number; `extra` holds the kind-specific rest (JSON-ready)."""

    status: str | None = None                 # completed, cancelled, early_stopped, ... (the run's own word)
    baseline_perplexity: float | None = None  # the unpruned model
    perplexity_pruned: float | None = None    # after pruning, before recovery training
    perplexity_after: float | None = None     # the final model (= perplexity_pruned when nothing was trained)
    params_before: int | None = None
    params_after: int | None = None
    heads_pruned: int | None = None
    active_heads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)   # canonical name -> 95% CI

    @property
    def final_perplexity(self) -> float | None:
        """The run's last measured perplexity: after recovery, else after pruning; None when it measured none."""
        return self.perplexity_after if self.perplexity_after is not None else self.perplexity_pruned

    @property
    def final_interval(self) -> tuple[float, float] | None:
        """The 95% interval of `final_perplexity`, when the run measured one."""
        return self.intervals.get("perplexity_after" if self.perplexity_after is not None else "perplexity_pruned")

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready dict: `extra`'s keys, then every measured (non-None) canonical field and its interval."""
        data = dict(self.extra)
        for f in fields(self):
            if f.name not in ("extra", "intervals") and getattr(self, f.name) is not None:
                data[f.name] = getattr(self, f.name)
        for name, (low, high) in self.intervals.items():
            data[f"{name}{CI_SUFFIX}"] = [low, high]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """A stored summary (new or old naming) as a RunSummary; non-finite numbers count as not measured."""
        names = [f.name for f in fields(cls) if f.name not in ("extra", "intervals")]
        values: dict[str, Any] = {}
        intervals: dict[str, tuple[float, float]] = {}
        for name in names:
            if name in LEGACY_KEYS:
                key = next((k for k in LEGACY_KEYS[name] if _measured(data.get(k))), None)
                values[name] = None if key is None else data[key]
                found = None if key is None else interval(data.get(key + CI_SUFFIX))
                if found is not None:
                    intervals[name] = found
            else:
                values[name] = data.get(name)
        extra = {k: v for k, v in data.items() if k not in names and not (k.endswith(CI_SUFFIX) and
                                                                           k[:-len(CI_SUFFIX)] in names)}
        return cls(**values, extra=extra, intervals=intervals)

    def update(self, **values: Any) -> None:
        """Set canonical fields by name and anything else into `extra`."""
        names = {f.name for f in fields(self)} - {"extra"}
        for key, value in values.items():
            if key in names:
                setattr(self, key, value)
            else:
                self.extra[key] = value


def interval(value: Any) -> tuple[float, float] | None:
    """A stored [low, high] as a tuple; None for anything else (absent, malformed, non-finite, reversed)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_measured(v) for v in value):
        return None
    low, high = float(value[0]), float(value[1])
    return (low, high) if low <= high else None


def ci_entry(key: str, result: Any) -> dict[str, list[float]]:
    """{`key`_ci: [low, high]} for a PerplexityResult-like `result` that has an interval, else {} (a summary's
    fields to write beside the number stored under `key`)."""
    low, high = getattr(result, "ci_low", None), getattr(result, "ci_high", None)
    return {} if low is None or high is None else {f"{key}{CI_SUFFIX}": [float(low), float(high)]}


def _measured(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
