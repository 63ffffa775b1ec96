"""`RunSummary`: the one typed summary every workflow writes to the experiment store, and every reader reads.

The measured numbers have one name each: `baseline_perplexity` (the unpruned model), `perplexity_pruned`
(after pruning, before any recovery training), `perplexity_after` (the run's final model) and the parameter
counts. Anything kind-specific (the plan, the fine-tune's result, benchmark winners, plasticity cycles, output
folders) lives in `extra` and is written as top-level keys beside them, so a stored summary stays a flat
JSON object.

Records written before RunSummary existed used other names for the same numbers; `from_dict` reads those
once, here, so no reader has to guess between them (see LEGACY_KEYS).
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

    @property
    def final_perplexity(self) -> float | None:
        """The run's last measured perplexity: after recovery, else after pruning; None when it measured none."""
        return self.perplexity_after if self.perplexity_after is not None else self.perplexity_pruned

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready dict: `extra`'s keys, then every measured (non-None) canonical field."""
        data = dict(self.extra)
        for f in fields(self):
            if f.name != "extra" and getattr(self, f.name) is not None:
                data[f.name] = getattr(self, f.name)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """A stored summary (new or old naming) as a RunSummary; non-finite numbers count as not measured."""
        names = [f.name for f in fields(cls) if f.name != "extra"]
        values: dict[str, Any] = {}
        for name in names:
            if name in LEGACY_KEYS:
                values[name] = next((data[k] for k in LEGACY_KEYS[name] if _measured(data.get(k))), None)
            else:
                values[name] = data.get(name)
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**values, extra=extra)

    def update(self, **values: Any) -> None:
        """Set canonical fields by name and anything else into `extra`."""
        names = {f.name for f in fields(self)} - {"extra"}
        for key, value in values.items():
            if key in names:
                setattr(self, key, value)
            else:
                self.extra[key] = value


def _measured(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
