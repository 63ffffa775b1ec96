"""Tables of the experiment store's records for the Experiments page (plain pandas, no Streamlit), and the name of
every run the dashboard records (one place, so a run is named the same way wherever it is shown)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from sentinel.pruning.budget import Target
from sentinel.sparsity.masks import parse_pattern
from sentinel.store import ExperimentRecord, MetricPoint
from sentinel.ui.session import PruneStep
from sentinel.workflows.summary import RunSummary

if TYPE_CHECKING:                    # types only: those modules import their run names from here
    from sentinel.sparsity.masks import SparsityConfig
    from sentinel.ui.budget import BudgetSettings
    from sentinel.ui.weights import ScheduleSettings
    from sentinel.ui.weights_sensitivity import SensitivityRequest


# -- run names: every run the dashboard records is named here, by what it did ------------------------------------------

METHOD_LABELS = {"l1": "magnitude", "l2": "magnitude (l2)", "random": "random", "gradient": "gradient",
                 "snip": "SNIP", "wanda": "Wanda", "sparsegpt": "SparseGPT"}


def target_words(measure: str, share: float) -> str:
    """A pruning target as people say it: 'params 50%', 'flops 30%', or 'speed-up 1.5×' (a factor, not a share)."""
    return f"speed-up {share:g}×" if measure == "speedup" else f"{measure} {share:.0%}"


def step_name(data: Mapping[str, Any]) -> str:
    """One recorded pruning step (`PruneStep.to_dict`) named by how its units were chosen and what it pruned:
    'entropy 30% mask (14 heads)', 'target params 50% (23 heads, 3,139 neurons), lstsq',
    'selection remove (layers 4, 7:mlp)'."""
    step = PruneStep.from_dict(dict(data))
    units = step.describe()
    recovery = f", {step.recovery}" if step.recovery else ""
    if step.strategy:
        level = f" {step.ratio:.0%}" if isinstance(step.ratio, (int, float)) else ""
        return f"{step.strategy}{level} {step.mode} ({units}){recovery}"
    if step.how.startswith("target "):                  # BudgetSettings.label(): 'target params=0.5 of ...'
        target = Target.parse(step.how.split()[1])
        shares = {"params": target.params, "flops": target.flops, "speedup": target.speedup}
        measure = next((k for k, v in shares.items() if v is not None), None)
        what = target_words(measure, shares[measure]) if measure else target.describe()   # per-kind ratios
        return f"target {what} ({units}){recovery}"
    how = "selection" if step.how.startswith("selection") else step.how
    return f"{how} {step.mode} ({units}){recovery}"


def steps_name(steps: list[Mapping[str, Any]]) -> str:
    """A run's pruning steps in order, 'A then B', or 'unpruned' when there were none."""
    return " then ".join(step_name(s) for s in steps) or "unpruned"


def finetune_run_name(steps: list[Mapping[str, Any]], train_steps: int | None = None, distill: bool = False) -> str:
    """A dashboard fine-tune named by what it did, e.g. 'entropy 30% mask (14 heads) + 40 steps' or
    'unpruned + 40 steps distilled'."""
    name = steps_name(steps)
    if train_steps:
        name += f" + {train_steps} steps" + (" distilled" if distill else "")
    return name


def session_run_name(steps: list[Mapping[str, Any]], adopted: str | None = None) -> str:
    """A session kept before another model replaced it, e.g. 'session: entropy 30% mask (14 heads) + fine-tune
    3f2a9c1b0d4e/final'."""
    return f"session: {steps_name(steps)}" + (f" + fine-tune {adopted}" if adopted else "")


def target_run_name(settings: BudgetSettings) -> str:
    """A target prune from Prune, e.g. 'params 50% heads+neurons, lstsq' or 'speed-up 1.5× heads, no recovery'."""
    recovery = "no recovery" if settings.recovery == "none" else settings.recovery
    return f"{target_words(settings.measure, settings.share)} {'+'.join(settings.units)}, {recovery}"


def sparsify_run_name(config: SparsityConfig, schedule: ScheduleSettings, int8: bool = False) -> str:
    """A Weights-page sparsify run, e.g. 'magnitude 50% 2:4 sparsify' or
    'Wanda 30% unstructured gradual 20 steps sparsify'."""
    pattern = config.pattern if parse_pattern(config.pattern) is not None else "unstructured"
    share = 1 - parse_pattern(pattern)[0] / parse_pattern(pattern)[1] if pattern != "unstructured" else config.sparsity
    when = "" if schedule.kind == "oneshot" else f" gradual {schedule.steps} steps"
    return f"{METHOD_LABELS.get(config.method, config.method)} {share:.0%} {pattern}{when} sparsify" + \
        (" + int8" if int8 else "")


def sensitivity_run_name(request: SensitivityRequest, layers: int) -> str:
    """A Weights-page sensitivity scan, e.g. 'sensitivity magnitude 6 layers at 10%, 50%'."""
    levels = ", ".join(f"{s:.0%}" for s in sorted(request.levels))
    return f"sensitivity {METHOD_LABELS.get(request.method, request.method)} {layers} layers at {levels}"


def final_perplexity(summary: Mapping[str, Any]) -> float | None:
    """The run's last measured perplexity from its summary (read as a RunSummary), or None when it recorded none."""
    value = RunSummary.from_dict(summary).final_perplexity
    return float(value) if value is not None else None


NOT_ON_PROTOCOL = "not on the app's protocol"


def off_protocol(record: ExperimentRecord) -> bool:
    """A dashboard fine-tune recorded before its job measured the app's protocol: its only perplexities are the
    trainer's (its own windows), which must not be shown where the app's protocol is promised."""
    value = record.summary.get("protocol_perplexity_after")
    measured = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return record.kind == "finetune" and "dashboard_steps" in record.config and not measured


def experiments_frame(records: Iterable[ExperimentRecord]) -> pd.DataFrame:
    """One row per experiment: when, what, its main settings and final perplexity ('perplexity_note' says when a
    dashboard run has no number on the app's protocol, instead of showing another protocol's)."""
    rows = []
    for r in records:
        ppl = None if off_protocol(r) else final_perplexity(r.summary)
        rows.append({
            "id": r.id, "name": r.name, "kind": r.kind, "status": r.status, "model": r.model,
            "created": datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M"),
            "strategy": r.config.get("strategy"), "pruning_ratio": r.config.get("pruning_ratio"),
            "steps": r.config.get("steps", r.config.get("max_steps")),
            "distill": _distill(r.config), "perplexity": significant(ppl) if ppl is not None else None,
            "perplexity_note": NOT_ON_PROTOCOL + " (recorded before the job measured it; open the job on Fine-tune "
                               "to measure it)" if off_protocol(r) else None,
        })
    return pd.DataFrame(rows)


def level_frame(records: Iterable[ExperimentRecord]) -> pd.DataFrame:
    """(model, strategy, level, stage, perplexity, run) for every run that recorded a strategy and a ratio.

    A run gives one point per measurement its RunSummary holds: 'pruned' (perplexity_pruned, before any
    training) and 'fine-tuned' or 'distilled' (perplexity_after). Identical points (one pruned model shared by two
    training arms) appear once.
    """
    rows = []
    for r in records:
        strategy, level = r.config.get("strategy"), r.config.get("pruning_ratio")
        if not strategy or not isinstance(level, (int, float)) or off_protocol(r):
            continue
        trained = "distilled" if _distill(r.config) else "fine-tuned"
        summary = RunSummary.from_dict(r.summary)
        for value, stage in ((summary.perplexity_pruned, "pruned"), (summary.perplexity_after, trained)):
            if value is not None:
                rows.append({"model": r.model or "bundled", "strategy": str(strategy), "level": float(level),
                             "stage": stage, "perplexity": float(value), "run": r.id})
    columns = ["model", "strategy", "level", "stage", "perplexity", "run"]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.drop_duplicates(subset=["model", "strategy", "level", "stage", "perplexity"])
    return frame.sort_values(["model", "strategy", "stage", "level"]).reset_index(drop=True)


def _distill(config: Mapping[str, Any]) -> Any:
    """Whether a run distilled: its own setting, or its nested fine-tuning settings' (workflow configs)."""
    nested = config.get("finetune")
    return config.get("distill", nested.get("distill") if isinstance(nested, Mapping) else None)


def curves_frame(curves: Mapping[str, list[MetricPoint]]) -> pd.DataFrame:
    """Metric time series as one wide table indexed by step (one column per metric)."""
    if not curves:
        return pd.DataFrame()
    series = {name: pd.Series({p.step: p.value for p in points}, dtype=float) for name, points in curves.items()}
    frame = pd.DataFrame(series)
    frame.index.name = "step"
    return frame.reset_index()


def readable(value: Any) -> str:
    """A setting or result as people read it: 4 significant digits, thousands separators, short lists."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "–"}[value]
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {readable(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return f"{len(value)} items" if len(value) > 6 else ", ".join(readable(v) for v in value)
    return str(value)


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits, for number columns people sort (what `readable` shows)."""
    return float(f"{value:.{digits}g}")


def readable_table(values: Mapping[str, Any]) -> pd.DataFrame:
    """A settings or results dict as a two-column table of rounded, plain values (nested steps summarised)."""
    rows = []
    for key, value in values.items():
        if key == "dashboard_steps" and isinstance(value, list):
            value = steps_name(value) if value else "none"
        rows.append({"setting": key.replace("_", " "), "value": readable(value)})
    return pd.DataFrame(rows, columns=["setting", "value"])


def config_diff(first: ExperimentRecord, second: ExperimentRecord) -> pd.DataFrame:
    """The settings on which two runs differ, side by side (a key one run lacks shows '–'). Columns are
    'A: name (id)' and 'B: name (id)': runs named by what they did often share a name."""
    left, right = f"A: {first.name} ({first.id})", f"B: {second.name} ({second.id})"
    keys = list(dict.fromkeys([*first.config, *second.config]))
    rows = []
    for key in keys:
        a, b = first.config.get(key), second.config.get(key)
        if key == "dashboard_steps":
            a, b = steps_name(a or []), steps_name(b or [])
        if a != b:
            rows.append({"setting": key.replace("_", " "), left: readable(a), right: readable(b)})
    return pd.DataFrame(rows, columns=["setting", left, right])


def overlay_frame(curves_by_run: Mapping[str, Mapping[str, list[MetricPoint]]], metric: str) -> pd.DataFrame:
    """(run, step, value) of one metric for several runs, for one chart with a colour per run."""
    rows = [{"run": run, "step": p.step, "value": p.value}
            for run, curves in curves_by_run.items() for p in curves.get(metric, [])
            if p.value is not None and math.isfinite(p.value)]
    return pd.DataFrame(rows, columns=["run", "step", "value"])
