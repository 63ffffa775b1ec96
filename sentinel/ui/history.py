"""Tables of the experiment store's records for the Experiments page (plain pandas, no Streamlit), and the name of
every run the dashboard records (one place, so a run is named the same way wherever it is shown)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from sentinel.files import redact_server_paths, remove_owned_folder, visitor_name
from sentinel.pruning.budget import Target
from sentinel.sparsity.masks import parse_pattern
from sentinel.store import ExperimentRecord, MetricPoint, Store, sentinel_home
from sentinel.ui.session import PruneStep
from sentinel.workflows.summary import RunSummary

if TYPE_CHECKING:                    # types only: those modules import their run names from here
    from sentinel.sparsity.masks import SparsityConfig
    from sentinel.ui.budget import BudgetSettings
    from sentinel.ui.weights import ScheduleSettings
    from sentinel.ui.weights_sensitivity import SensitivityRequest


logger = logging.getLogger(__name__)

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
    """One row per experiment: when, what, its tags, main settings, the share of parameters it removed and its final
    perplexity with the 95% interval where the run measured one ('perplexity_note' says when a dashboard run has no
    number on the app's protocol, instead of showing another protocol's)."""
    rows = []
    for r in records:
        summary = RunSummary.from_dict(r.summary)
        ppl = None if off_protocol(r) else summary.final_perplexity
        ci = None if ppl is None else summary.final_interval
        rows.append({
            "id": r.id, "name": r.name, "tags": ", ".join(r.tags), "kind": r.kind, "status": r.status,
            "model": visitor_name(r.model) if r.model else r.model,
            "created": datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M"),
            "strategy": r.config.get("strategy"), "pruning_ratio": r.config.get("pruning_ratio"),
            "params_removed": parameter_share(r),
            "steps": r.config.get("steps", r.config.get("max_steps")),
            "distill": _distill(r.config), "perplexity": significant(ppl) if ppl is not None else None,
            "ci_low": significant(ci[0]) if ci else None, "ci_high": significant(ci[1]) if ci else None,
            "perplexity_note": NOT_ON_PROTOCOL + " (recorded before the job measured it; open the job on Fine-tune "
                               "to measure it)" if off_protocol(r) else None,
        })
    return pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)


EXPERIMENT_COLUMNS = ["id", "name", "tags", "kind", "status", "model", "created", "strategy", "pruning_ratio",
                      "params_removed", "steps", "distill", "perplexity", "ci_low", "ci_high", "perplexity_note"]


def filter_records(records: Iterable[ExperimentRecord], text: str = "", kinds: Iterable[str] = (),
                   tags: Iterable[str] = ()) -> list[ExperimentRecord]:
    """The runs whose name or id contains `text` (any case), of one of `kinds` and carrying one of `tags` (an empty
    choice does not filter)."""
    needle, kinds, tags = text.strip().lower(), set(kinds), set(tags)
    return [r for r in records
            if (not needle or needle in r.name.lower() or needle in r.id)
            and (not kinds or r.kind in kinds) and (not tags or tags & set(r.tags))]


def all_tags(records: Iterable[ExperimentRecord]) -> list[str]:
    """Every tag in use, sorted."""
    return sorted({t for r in records for t in r.tags}, key=str.lower)


def parse_tags(text: str) -> list[str]:
    """'baseline, demo day' -> ['baseline', 'demo day'] (commas separate tags; empty pieces dropped)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def parameter_share(record: ExperimentRecord) -> float | None:
    """The share of the model's parameters the run removed, measured (1 - after / before): from its summary, or,
    for a dashboard fine-tune, from the counts its config recorded when it started. None when neither holds both
    counts (runs recorded before they were kept). Masked units keep their weights: a masking run removes 0%."""
    summary = RunSummary.from_dict(record.summary)
    before, after = summary.params_before, summary.params_after
    if before is None or after is None:
        before, after = record.config.get("params_before"), record.config.get("params_after")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after)) or before <= 0:
        return None
    return round(1 - after / before, 4)


Axis = Literal["heads", "params"]
AXIS_TITLES: dict[str, str] = {"heads": "Share of heads pruned", "params": "Share of parameters removed (measured)"}


def level_frame(records: Iterable[ExperimentRecord], axis: Axis = "heads") -> pd.DataFrame:
    """(model, strategy, level, stage, perplexity, ci_low, ci_high, run) for every run that recorded a strategy and,
    on the `axis` chosen, a level: the share of heads it pruned ('heads', its `pruning_ratio`) or the share of
    parameters it removed ('params', `parameter_share`: a run mixing heads, neurons and layers sits at what it
    removed in all).

    A run gives one point per measurement its RunSummary holds: 'pruned' (perplexity_pruned, before any
    training) and 'fine-tuned' or 'distilled' (perplexity_after), each with its interval where one was recorded.
    Identical points (one pruned model shared by two training arms) appear once.
    """
    rows = []
    for r in records:
        strategy = r.config.get("strategy")
        level = r.config.get("pruning_ratio") if axis == "heads" else parameter_share(r)
        if not strategy or not isinstance(level, (int, float)) or off_protocol(r):
            continue
        trained = "distilled" if _distill(r.config) else "fine-tuned"
        summary = RunSummary.from_dict(r.summary)
        for name, stage in (("perplexity_pruned", "pruned"), ("perplexity_after", trained)):
            value = getattr(summary, name)
            if value is not None:
                low, high = summary.intervals.get(name, (None, None))
                rows.append({"model": model_label(r), "strategy": str(strategy), "level": float(level),
                             "stage": stage, "perplexity": float(value), "ci_low": low, "ci_high": high,
                             "run": r.id})
    columns = ["model", "strategy", "level", "stage", "perplexity", "ci_low", "ci_high", "run"]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.drop_duplicates(subset=["model", "strategy", "level", "stage", "perplexity"])
    return frame.sort_values(["model", "strategy", "stage", "level"]).reset_index(drop=True)


def model_label(record: ExperimentRecord) -> str:
    """The run's model as a visitor sees it (no server folder), the key the level chart and its baselines share."""
    return visitor_name(record.model) if record.model else "bundled"


@dataclass(frozen=True)
class Baseline:
    """The unpruned model's perplexity, as the newest run on that model that measured it recorded it."""

    perplexity: float
    run: str


def baselines(records: Iterable[ExperimentRecord]) -> dict[str, Baseline]:
    """{model: its unpruned perplexity} from the newest run of each model that measured it: a dashboard
    fine-tune's `baseline_perplexity` setting (the base as the page measured it when the run started), or the
    summary's `baseline_perplexity` of a run that did not start from an already-pruned model."""
    found: dict[str, Baseline] = {}
    for r in sorted(records, key=lambda r: r.created, reverse=True):
        model = model_label(r)
        if model in found or off_protocol(r):
            continue
        value = r.config.get("baseline_perplexity")
        if value is None and not r.config.get("dashboard_steps"):
            value = RunSummary.from_dict(r.summary).baseline_perplexity
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[model] = Baseline(float(value), r.id)
    return found


def table_files(frame: pd.DataFrame) -> tuple[bytes, bytes]:
    """(CSV, JSON) of a table for download: the same rows and columns; JSON as a list of records, missing values
    as null."""
    records = json.loads(frame.to_json(orient="records", force_ascii=False))
    return frame.to_csv(index=False).encode("utf-8"), json.dumps(records, indent=1, ensure_ascii=False).encode("utf-8")


def delete_run(store: Store, experiment_id: str) -> tuple[ExperimentRecord, list[Path]]:
    """Delete a run from the store, then the one folder a dashboard fine-tune writes for it under the data folder
    (its checkpoints), only where Sentinel's marker says it wrote that folder; returns the record and what was
    removed. Nothing else (a CLI run's --out folder, exports, saved models) is touched."""
    from sentinel.ui.finetune import DASHBOARD_RUNS       # that module imports this one: import when used

    record = store.delete_experiment(experiment_id)
    folder = sentinel_home() / DASHBOARD_RUNS / record.id
    removed = [folder] if folder.exists() and remove_owned_folder(folder) else []
    logger.info("Deleted run %s; removed %s", record.id, ", ".join(map(str, removed)) or "no folder")
    return record, removed


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
    """A setting or result as people read it: 4 significant digits, thousands separators, short lists; a folder
    of the server by its visitor name (`visitor_name`), never its path."""
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
    if isinstance(value, str):
        return visitor_name(value) if os.path.isabs(value) else redact_server_paths(value)
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
