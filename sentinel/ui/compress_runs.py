"""Compress runs (`sentinel compress` and the Prune page's target prunes) for the Experiments page: one row per run
with predicted and measured parameters and FLOPs and the perplexity before, right after removal and at the end."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from sentinel.store import ExperimentRecord
from sentinel.ui.history import significant
from sentinel.workflows.summary import RunSummary

COMPRESS_KINDS = {"compress": "CLI", "dashboard-compress": "dashboard"}
COLUMNS = ["run", "from", "status", "target", "units", "recovery", "params before", "params predicted",
           "params after", "FLOPs predicted", "FLOPs after", "perplexity before", "perplexity removed",
           "perplexity after", "after", "id"]


def _recovery(record: ExperimentRecord) -> str:
    """The recovery a run used: the dashboard's setting, or the CLI's --recover."""
    method = record.config.get("recovery", record.config.get("recover"))
    return "none" if method in (None, "none") else str(method)


def _final_stage(record: ExperimentRecord) -> str:
    """What the run's last perplexity measured: fine-tuned (CLI --finetune-steps), recovered, or just removed."""
    if record.summary.get("finetune"):
        return "fine-tuned"
    return "removed" if _recovery(record) == "none" else "recovered"


def _rounded(value: Any) -> float | None:
    """A perplexity to 4 significant digits, as every page shows them (None when the run did not record it)."""
    return significant(float(value)) if isinstance(value, (int, float)) else None


def compress_runs_frame(records: Iterable[ExperimentRecord]) -> pd.DataFrame:
    """One row per compress or target-prune run that finished with a summary (newest first, as given)."""
    rows = []
    for r in records:
        if r.kind not in COMPRESS_KINDS or "params_after" not in r.summary:
            continue
        summary = RunSummary.from_dict(r.summary)
        budget: Mapping[str, Any] = r.summary.get("budget") or {}
        units = r.summary.get("units") or r.config.get("units") or []
        rows.append({
            "run": r.name, "from": COMPRESS_KINDS[r.kind], "status": r.status, "target": r.summary.get("target"),
            "units": "+".join(units) if isinstance(units, list) else str(units), "recovery": _recovery(r),
            "params before": summary.params_before, "params predicted": budget.get("total_params_after"),
            "params after": summary.params_after, "FLOPs predicted": budget.get("flops_after"),
            "FLOPs after": r.summary.get("body_flops_after"),
            "perplexity before": _rounded(summary.baseline_perplexity),
            "perplexity removed": _rounded(summary.perplexity_pruned),
            "perplexity after": _rounded(summary.final_perplexity), "after": _final_stage(r), "id": r.id,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def compress_points(frame: pd.DataFrame) -> pd.DataFrame:
    """(run, series, removed, stage, perplexity) for the chart: each run's measured share of parameters removed,
    with its perplexity right after removal and, when it recovered or fine-tuned, at the end."""
    rows = []
    for _, row in frame.iterrows():
        if not row["params before"] or row["params after"] is None:
            continue
        removed = 1.0 - row["params after"] / row["params before"]
        series = f"{row['units']}, {row['recovery']}"
        stages = [("removed", row["perplexity removed"])]
        if row["after"] != "removed":
            stages.append((row["after"], row["perplexity after"]))
        rows += [{"run": row["run"], "series": series, "removed": removed, "stage": stage, "perplexity": value}
                 for stage, value in stages if value is not None]
    return pd.DataFrame(rows, columns=["run", "series", "removed", "stage", "perplexity"])
