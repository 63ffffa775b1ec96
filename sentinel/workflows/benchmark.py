"""Benchmark strategies against each other: for each strategy x level, prune, evaluate, fine-tune, evaluate again.

Every cell starts from a fresh copy of the unpruned model. A strategy's metrics are computed once on the
unpruned model (they do not depend on the level); the strategy then selects `level` of the heads. Each
cell measures validation perplexity after pruning and after `steps` fine-tuning steps (and, with
`distill`, after the same steps of distillation from the unpruned model), plus inference speed and size.

Writes into `out`: results.csv and results.json (rows, baseline, winners, settings, machine, date),
perplexity.{html,png} and speed.{html,png}. results.json is rewritten after every cell, so a resumed
benchmark job skips the cells already done. Each cell is also an experiment of kind "benchmark-run". Every
step is sentinel.workflows.steps; every record is written by a `RunRecorder` as a `RunSummary`.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from sentinel.demo.build import describe_machine
from sentinel.errors import SentinelError
from sentinel.evaluation.size import parameter_count
from sentinel.evaluation.speed import measure_speed
from sentinel.jobs import JobContext, ProgressEvent
from sentinel.metrics import compute_scores
from sentinel.models.loading import load_model
from sentinel.pruning.budget import select_budget
from sentinel.pruning.masks import active_heads
from sentinel.pruning.plan import PruningPlan
from sentinel.pruning.strategies import get_strategy, strategy_class
from sentinel.store import Store
from sentinel.training.config import FineTuneConfig, known_settings, nested_finetune, with_steps
from sentinel.training.finetune import load_finetune_data
from sentinel.workflows.recorder import RunRecorder
from sentinel.workflows.steps import analysis_batches, evaluate, measure, prune, select, tune
from sentinel.workflows.summary import RunSummary

logger = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "strategy", "level", "heads_pruned", "active_heads", "params", "perplexity_pruned", "perplexity_finetuned",
    "perplexity_distilled", "prefill_tokens_per_s", "decode_tokens_per_s", "steps", "finetune_seconds",
    "distill_seconds", "neurons_pruned", "layers_pruned", "prunable_share_removed",
]
UNIT_KINDS = {"heads": "head", "neurons": "neuron", "layers": "layer"}
BUDGET_DEFAULT_METRIC = {"head": "magnitude", "neuron": "magnitude", "layer": "block_influence"}
# Flat setting names (before FineTuneConfig was nested) -> FineTuneConfig fields; from_dict still reads them.
LEGACY_FINETUNE_KEYS = {"learning_rate": "learning_rate", "batch_size": "batch_size", "block_size": "block_size",
                        "eval_tokens": "eval_max_tokens", "seed": "seed", "device": "device"}


@dataclass
class BenchmarkConfig:
    """The grid (strategies x levels), the recovery budget (steps, distill) and the measuring settings."""

    out: str
    strategies: list[str] = field(default_factory=lambda: ["entropy", "magnitude", "gradient", "random"])
    levels: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5])
    steps: int = 50                       # recovery steps per cell and arm; replaces finetune.max_steps
    distill: bool = False                 # also a distillation arm per cell (sets finetune.distill per arm)
    model: str | None = None
    text: str | None = None
    mode: str = "remove"
    # learning rate, batch and block size, validation tokens, seed and device: defined once, here
    finetune: FineTuneConfig = field(default_factory=lambda: FineTuneConfig(eval_every=0, eval_max_tokens=8192))
    analysis_samples: int = 16
    speed_prompt_tokens: int = 64
    speed_new_tokens: int = 16
    speed_runs: int = 3
    dtype: str | None = None
    units: list[str] = field(default_factory=lambda: ["heads"])   # other than heads alone: levels are budgets
    allocation: str = "global"

    @property
    def budgeted(self) -> bool:
        """Levels are shares of the prunable parameters (select_budget) unless only heads are pruned globally."""
        return self.units != ["heads"] or self.allocation != "global"

    def validate(self) -> None:
        """One clear SentinelError for the first bad setting, before any model is loaded."""
        if not self.strategies:
            raise SentinelError("Give at least one strategy.")
        for name in self.strategies:
            strategy_class(name)
        if not self.levels:
            raise SentinelError("Give at least one pruning level.")
        for level in self.levels:
            if not isinstance(level, (int, float)) or not 0 <= level < 1:
                raise SentinelError(f"Pruning level {level} is outside [0, 1); give fractions such as 0.1,0.3,0.5.")
        if self.steps <= 0:
            raise SentinelError(f"--steps must be at least 1, got {self.steps}.")
        if self.mode not in ("mask", "remove"):
            raise SentinelError(f"mode must be 'mask' or 'remove', got {self.mode!r}.")
        unknown = [u for u in self.units if u not in UNIT_KINDS]
        if unknown or not self.units:
            raise SentinelError(f"Unknown unit kind {', '.join(unknown) or '(none)'}; choose from heads, neurons, "
                                "layers.")
        if self.allocation not in ("global", "uniform"):
            raise SentinelError(f"allocation must be 'global' or 'uniform', got {self.allocation!r}.")
        for name in ("batch_size", "analysis_samples", "speed_prompt_tokens", "speed_new_tokens", "speed_runs"):
            if getattr(self, name) < 1:
                raise SentinelError(f"{name} must be at least 1, got {getattr(self, name)}.")
        self.finetune_config(False).validate()

    def finetune_config(self, distill: bool) -> FineTuneConfig:
        return with_steps(self.finetune, self.steps, distill=distill)

    # Read-only views of the nested fine-tuning settings, for the code and callers that read them by name.
    batch_size = property(lambda self: self.finetune.batch_size)
    block_size = property(lambda self: self.finetune.block_size)
    learning_rate = property(lambda self: self.finetune.learning_rate)
    eval_tokens = property(lambda self: self.finetune.eval_max_tokens)
    seed = property(lambda self: self.finetune.seed)
    device = property(lambda self: self.finetune.device)

    @property
    def cells(self) -> list[tuple[str, float]]:
        return [(s, float(level)) for s in self.strategies for level in self.levels]

    @property
    def units_per_cell(self) -> int:
        """Progress units of one cell: 1 for prune + evaluate + speed, then one per fine-tuning step per arm."""
        return 1 + self.steps * (2 if self.distill else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkConfig:
        """From to_dict's form; also the flat names older results and the job runner use (batch_size, ...)."""
        values, tune_config = nested_finetune(data, FineTuneConfig(eval_every=0, eval_max_tokens=8192),
                                              LEGACY_FINETUNE_KEYS)
        return cls(**known_settings(cls, values, "benchmark"), finetune=tune_config)

    def comparable(self) -> dict[str, Any]:
        """The settings that decide the results (everything but the device), to match a resumed run's."""
        data = self.to_dict()
        data["finetune"] = {k: v for k, v in data["finetune"].items() if k != "device"}
        return data


@dataclass
class BenchmarkResult:
    """Baseline (unpruned) numbers, one row per strategy x level, and who won."""

    config: dict[str, Any]
    baseline: dict[str, Any]
    rows: list[dict[str, Any]]
    winners: dict[str, Any]
    complete: bool
    machine: str
    date: str
    experiment_id: str | None = None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=RESULT_COLUMNS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkResult:
        return cls(**data)


def winners(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per column of perplexities: the best strategy at each level (and its margin over the runner-up in %),
    and the ranking by mean perplexity over all levels (lower is better)."""
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    verdict: dict[str, Any] = {}
    for column in ("perplexity_pruned", "perplexity_finetuned", "perplexity_distilled"):
        values = frame.dropna(subset=[column])
        if values.empty:
            continue
        per_level = {}
        for level, group in values.groupby("level"):
            ranked = group.sort_values(column)
            best = ranked.iloc[0]
            entry = {"strategy": best["strategy"], "perplexity": float(best[column])}
            if len(ranked) > 1:
                second = ranked.iloc[1]
                entry.update(runner_up=second["strategy"],
                             margin_percent=100.0 * (float(second[column]) / float(best[column]) - 1.0))
            per_level[f"{level:g}"] = entry
        mean = values.groupby("strategy")[column].mean().sort_values()
        verdict[column] = {"per_level": per_level,
                           "mean_over_levels": {name: float(v) for name, v in mean.items()}}
    return verdict


def run_benchmark(
    config: BenchmarkConfig,
    store: Store | None = None,
    *,
    report: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    experiment_id: str | None = None,
) -> BenchmarkResult:
    """Run the grid (skipping cells already in out/results.json when `resume`); writes results and charts."""
    config.validate()
    out = Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    store = store if store is not None else Store()
    recorder = RunRecorder.start(store, f"benchmark {','.join(config.strategies)}", config.to_dict(), "benchmark",
                                 config.model, experiment_id)
    experiment_id = recorder.experiment_id
    recorder.write_summary(RunSummary(extra={"out": str(out)}), status="running")
    loaded = load_model(config.model, device=config.device, dtype=config.dtype)
    base, tokenizer = loaded.model, loaded.tokenizer
    data = load_finetune_data(tokenizer, config.text, config.block_size, max_validation_tokens=config.eval_tokens)
    previous = _previous(out, config) if resume else None
    if previous is not None:
        baseline, rows = previous.baseline, list(previous.rows)
    else:
        speed = _speed(base, tokenizer, config)
        baseline = {"perplexity": evaluate(base, tokenizer, data), "params": parameter_count(base),
                    "active_heads": sum(map(len, active_heads(base).values())), **speed, "data": data.describe()}
        rows = []
    done = {(r["strategy"], float(r["level"])) for r in rows}
    batches = analysis_batches(data.train, config.analysis_samples, config.batch_size, loaded.device)
    total = len(config.cells) * config.units_per_cell
    progress = {"units": len(done) * config.units_per_cell}
    result = _result(config, baseline, rows, False, loaded.device, experiment_id)
    scores: dict[str, Any] = {}
    for name, level in config.cells:
        if (name, level) in done:
            continue
        if should_stop is not None and should_stop():
            break
        strategy = get_strategy(name, pruning_ratio=level, seed=config.seed, whole_kv_groups=config.mode == "remove")
        if name not in scores:
            scores[name] = (_unit_scores(config, base, name, batches) if config.budgeted else
                            measure(base, strategy, batches, seed=config.seed))
        row = _cell(config, base, tokenizer, data, strategy, scores[name], store, experiment_id, report, should_stop,
                    progress, total)
        if row is None:   # cancelled during its fine-tune
            break
        rows.append(row)
        result = _result(config, baseline, rows, False, loaded.device, experiment_id)
        _write(out, result, charts=False)
    result = _result(config, baseline, rows, len(rows) == len(config.cells), loaded.device, experiment_id)
    _write(out, result, charts=bool(rows))
    recorder.write_summary(RunSummary(baseline_perplexity=baseline["perplexity"],
                                      extra={"out": str(out), "cells": len(rows), "winners": result.winners}),
                           status="done" if result.complete else "cancelled")
    return result


def run_benchmark_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "benchmark"; a resumed job skips the cells already finished."""
    config = BenchmarkConfig.from_dict({k: v for k, v in params.items() if k != "device"} | {"device": ctx.device})
    result = run_benchmark(config, ctx.store, report=lambda e: ctx.report(e, record_metrics=False),
                           should_stop=lambda: ctx.cancelled, resume=ctx.attempt > 1, experiment_id=ctx.experiment_id)
    return {"out": config.out, "cells": len(result.rows), "complete": result.complete, "winners": result.winners}


def _cell(config: BenchmarkConfig, base: torch.nn.Module, tokenizer: Any, data: Any, strategy: Any, scores: Any,
          store: Store, parent: str, report: Callable[[ProgressEvent], None] | None,
          should_stop: Callable[[], bool] | None, progress: dict[str, int], total: int) -> dict[str, Any] | None:
    """Prune a fresh copy, measure it, fine-tune (and distil) it; None when cancelled mid-way."""
    label = f"{strategy.name} {strategy.pruning_ratio:.0%}"
    model = copy.deepcopy(base)
    budget = None
    if config.budgeted:
        budget = select_budget(model, scores, f"params={strategy.pruning_ratio}", allocation=config.allocation,
                               whole_kv_groups=config.mode == "remove")
        mixed = budget.plan
    else:
        mixed = PruningPlan(heads=select(model, strategy, scores))
    plan = mixed.heads
    prune(model, mixed, config.mode, note=strategy.to_dict())
    row: dict[str, Any] = {
        "neurons_pruned": mixed.counts()["neurons"], "layers_pruned": mixed.counts()["layers"],
        "prunable_share_removed": None if budget is None else budget.prunable_share_removed,
        "strategy": strategy.name, "level": strategy.pruning_ratio, "heads_pruned": sum(map(len, plan.values())),
        "active_heads": sum(map(len, active_heads(model).values())), "params": parameter_count(model),
        "perplexity_pruned": evaluate(model, tokenizer, data), **_speed(model, tokenizer, config),
        "steps": config.steps, "perplexity_distilled": None, "distill_seconds": None,
    }
    progress["units"] += 1
    _tell(report, progress["units"], total, f"{label}: pruned")
    arms = [("finetuned", False)] + ([("distilled", True)] if config.distill else [])
    pruned_state = copy.deepcopy(model) if config.distill else None
    for arm, distill in arms:
        student = model if arm == "finetuned" else pruned_state
        record = RunRecorder.start(
            store, f"{label} {arm}", {"strategy": strategy.name, "pruning_ratio": strategy.pruning_ratio,
                                      "steps": config.steps, "distill": distill, "mode": config.mode,
                                      "benchmark": parent, "learning_rate": config.learning_rate,
                                      "batch_size": config.batch_size},
            "benchmark-run", config.model)
        record.record_pruning(plan, config.mode)
        offset = progress["units"]

        def on_event(event: ProgressEvent, record: RunRecorder = record, offset: int = offset, arm: str = arm) -> None:
            record.record_event(event)
            if event.loss is not None:
                _tell(report, offset + event.step, total, f"{label}: {arm}", event.loss)

        tuned = tune(student, tokenizer, data, config.finetune_config(distill), teacher=base if distill else None,
                     on_event=on_event, should_stop=should_stop)
        record.write_summary(RunSummary(
            status=tuned.stopped, perplexity_pruned=row["perplexity_pruned"], perplexity_after=tuned.perplexity_after,
            heads_pruned=row["heads_pruned"], params_after=row["params"], extra={"seconds": tuned.seconds}),
            status=tuned.stopped)
        if tuned.stopped == "cancelled":
            return None
        row[f"perplexity_{arm}"] = tuned.perplexity_after
        row["finetune_seconds" if arm == "finetuned" else "distill_seconds"] = tuned.seconds
        progress["units"] = offset + config.steps
    logger.info("%s: perplexity %.3f pruned, %.3f fine-tuned%s", label, row["perplexity_pruned"],
                row["perplexity_finetuned"],
                f", {row['perplexity_distilled']:.3f} distilled" if row["perplexity_distilled"] else "")
    return row


def _unit_scores(config: BenchmarkConfig, base: torch.nn.Module, name: str, batches: Any) -> dict[str, Any]:
    """Scores of every unit kind of a budgeted benchmark: the strategy's metric where the kind has it, else the
    kind's default (magnitude; block influence for layers)."""
    from sentinel.metrics import KIND_METRICS

    found = {}
    for unit in config.units:
        kind = UNIT_KINDS[unit]
        metric = name if name in KIND_METRICS[kind] else BUDGET_DEFAULT_METRIC[kind]
        found[kind] = compute_scores(base, [metric], batches, seed=config.seed, kind=kind)[metric]
    return found


def _speed(model: torch.nn.Module, tokenizer: Any, config: BenchmarkConfig) -> dict[str, float]:
    """Prefill and decode tokens/s; prompt and new tokens shrink to fit a model with few positions."""
    positions = getattr(model.config, "max_position_embeddings", None) or 1 << 30
    new = min(config.speed_new_tokens, positions // 2)
    prompt = min(config.speed_prompt_tokens, positions - new)
    speed = measure_speed(model, tokenizer, prompt_tokens=prompt, new_tokens=new, runs=config.speed_runs,
                          seed=config.seed)
    return {"prefill_tokens_per_s": speed.prefill_tokens_per_s, "decode_tokens_per_s": speed.decode_tokens_per_s}


def _tell(report: Callable[[ProgressEvent], None] | None, units: int, total: int, message: str,
          loss: float | None = None) -> None:
    if report is not None:
        report(ProgressEvent(step=units, total_steps=total, loss=loss, message=message))


def _result(config: BenchmarkConfig, baseline: dict[str, Any], rows: list[dict[str, Any]], complete: bool,
            device: torch.device, experiment_id: str | None) -> BenchmarkResult:
    return BenchmarkResult(config.to_dict(), baseline, rows, winners(rows), complete, describe_machine(device),
                           datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), experiment_id)


def _previous(out: Path, config: BenchmarkConfig) -> BenchmarkResult | None:
    """The partial result of an earlier run of the same settings, if out/results.json holds one."""
    path = out / "results.json"
    if not path.is_file():
        return None
    previous = BenchmarkResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    if BenchmarkConfig.from_dict(previous.config).comparable() != config.comparable():
        logger.warning("%s holds results of different settings; starting over.", path)
        return None
    return previous


def _write(out: Path, result: BenchmarkResult, charts: bool) -> None:
    """results.json (atomically) and results.csv; the charts once the grid is finished or stopped."""
    staging = out / ".results.json.tmp"
    staging.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=True), encoding="utf-8")
    staging.replace(out / "results.json")
    result.frame().to_csv(out / "results.csv", index=False)
    if charts:
        write_charts(out, result)


def write_charts(out: Path, result: BenchmarkResult) -> list[Path]:
    """perplexity.{html,png} (before/after fine-tuning, per strategy) and speed.{html,png}; HTML works offline."""
    from sentinel.charts import level_chart_with_baseline, stage_panels

    frame = result.frame()
    stages = {"perplexity_pruned": "pruned", "perplexity_finetuned": "fine-tuned",
              "perplexity_distilled": "distilled"}
    long = frame.melt(id_vars=["strategy", "level"], value_vars=list(stages), var_name="stage",
                      value_name="perplexity").dropna(subset=["perplexity"])
    long["stage"] = long["stage"].map(stages)
    steps = result.config["steps"]
    charts = {
        "perplexity": stage_panels(
            long, "perplexity", f"Validation perplexity vs. share of heads pruned: after pruning, and after "
            f"{steps} steps of fine-tuning (dashed: unpruned)", result.baseline.get("perplexity")),
        "speed": level_chart_with_baseline(
            frame[["strategy", "level", "decode_tokens_per_s"]], "decode_tokens_per_s",
            f"Decode speed vs. share of heads pruned ({result.config['mode']})",
            result.baseline.get("decode_tokens_per_s"), "unpruned"),
    }
    written = []
    for name, chart in charts.items():
        for suffix in ("html", "png"):
            path = out / f"{name}.{suffix}"
            if suffix == "html":
                chart.save(str(path), inline=True)
            else:
                chart.save(str(path), scale_factor=2)
            written.append(path)
    return written
