"""Experiments: load -> measure -> prune -> evaluate -> fine-tune -> evaluate -> sample, recorded in the store.

    config = ExperimentConfig(strategy="entropy", pruning_ratio=0.3, steps=200, output_dir="runs/x",
                              finetune=FineTuneConfig(distill=True, eval_every=0, eval_max_tokens=16384))
    model, tokenizer, summary = run_experiment(config)

The summary (a `RunSummary` as a dict; also `<output_dir>/summary.json` and the experiment's summary in the
store) holds the perplexity of the unpruned, pruned and fine-tuned model, what was pruned, parameters before
and after, and the fine-tune's result. The steps are sentinel.workflows.steps; `ProgressTracker` (the shared
`RunRecorder`) records loss, perplexity, pruning and samples as they
happen. As a job (kind "experiment"), a cancelled or interrupted experiment resumes its fine-tune from
the last checkpoint; the numbers measured before that come from the stored summary.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from sentinel.demo.prompts import default_prompts
from sentinel.errors import DataError, SentinelError
from sentinel.evaluation.size import parameter_count
from sentinel.generation import generate_text
from sentinel.jobs import JobContext, JobManager, ProgressEvent
from sentinel.models.state import model_state
from sentinel.models.loading import load_model, save_model
from sentinel.pruning.masks import active_heads
from sentinel.pruning.plan import plan_to_json
from sentinel.pruning.strategies import get_strategy
from sentinel.store import Store, sentinel_home
from sentinel.training.config import FineTuneConfig, known_settings, nested_finetune, with_steps
from sentinel.training.finetune import describe_result, load_finetune_data
from sentinel.workflows.recorder import RunRecorder
from sentinel.workflows.steps import analysis_batches, evaluate, prune_by_strategy, tune
from sentinel.workflows.summary import RunSummary

ProgressTracker = RunRecorder   # the experiment's name for the shared run recorder

# Flat setting names (before FineTuneConfig was nested) -> FineTuneConfig fields; from_dict still reads them.
LEGACY_FINETUNE_KEYS = {"learning_rate": "learning_rate", "batch_size": "batch_size", "block_size": "block_size",
                        "eval_every": "eval_every", "eval_tokens": "eval_max_tokens", "distill": "distill",
                        "seed": "seed", "device": "device"}

logger = logging.getLogger(__name__)

DEFAULT_PROMPTS = default_prompts()[:2]   # fit the bundled model's corpus
PRUNE_MODES = ("mask", "remove")


@dataclass
class ExperimentConfig:
    """One pruning experiment, JSON-ready: what to prune, how much, how to recover, where to write."""

    model: str | None = None              # hub id or folder; None = the bundled model
    strategy: str = "entropy"
    pruning_ratio: float = 0.3
    steps: int | None = 100               # fine-tuning steps (0: prune and evaluate only); replaces finetune.max_steps
    epochs: float | None = None           # alternatively passes over the training blocks (steps must be None)
    # learning rate, batch and block size, evaluation, distillation, seed and device: defined once, here
    finetune: FineTuneConfig = field(default_factory=lambda: FineTuneConfig(eval_every=0, eval_max_tokens=16384))
    output_dir: str | None = None         # default: $SENTINEL_HOME/experiments/<experiment id>
    mode: str = "mask"                    # mask (reversible) or remove (smaller, faster)
    text: str | None = None               # training text (sentinel.data.load_texts); None = the bundled corpus
    analysis_samples: int = 32            # blocks the strategy's metrics are computed on
    min_heads: int = 1
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    sample_tokens: int = 30
    name: str | None = None

    def validate(self) -> None:
        """Raise a SentinelError naming the first bad setting (before any model is loaded)."""
        get_strategy(self.strategy, pruning_ratio=self.pruning_ratio, min_heads=self.min_heads, seed=self.seed)
        if (self.steps is None) == (self.epochs is None):
            raise SentinelError("Give exactly one of steps or epochs.")
        if self.steps is not None and self.steps < 0:
            raise SentinelError(f"steps must be 0 or more, got {self.steps}.")
        if self.epochs is not None and not self.epochs > 0:
            raise SentinelError(f"epochs must be > 0, got {self.epochs}.")
        if self.mode not in PRUNE_MODES:
            raise SentinelError(f"mode must be one of {', '.join(PRUNE_MODES)}, got {self.mode!r}.")
        for name in ("batch_size", "analysis_samples"):
            if getattr(self, name) < 1:
                raise SentinelError(f"{name} must be at least 1, got {getattr(self, name)}.")
        self.finetune_config(1).validate()

    def finetune_config(self, steps: int) -> FineTuneConfig:
        return with_steps(self.finetune, steps)

    # Read-only views of the nested fine-tuning settings, for the code and callers that read them by name.
    batch_size = property(lambda self: self.finetune.batch_size)
    block_size = property(lambda self: self.finetune.block_size)
    learning_rate = property(lambda self: self.finetune.learning_rate)
    eval_tokens = property(lambda self: self.finetune.eval_max_tokens)
    eval_every = property(lambda self: self.finetune.eval_every)
    distill = property(lambda self: self.finetune.distill)
    seed = property(lambda self: self.finetune.seed)
    device = property(lambda self: self.finetune.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """From to_dict's form; also the flat names older records and the job runner use (batch_size, ...)."""
        values, tune_config = nested_finetune(data, cls().finetune, LEGACY_FINETUNE_KEYS)
        return cls(**known_settings(cls, values, "experiment"), finetune=tune_config)


def run_experiment(
    config: ExperimentConfig,
    store: Store | None = None,
    *,
    experiment_id: str | None = None,
    on_event: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
    resume_checkpoint: str | None = None,
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Run one experiment end to end; returns (model, tokenizer, summary). Records into `store` (default Store())."""
    config.validate()
    store = store if store is not None else Store()
    strategy = get_strategy(config.strategy, pruning_ratio=config.pruning_ratio, min_heads=config.min_heads,
                            seed=config.seed, whole_kv_groups=config.mode == "remove")
    tracker = RunRecorder.start(store, _name(config), config.to_dict(), "experiment", config.model, experiment_id)
    experiment_id = tracker.experiment_id
    out = Path(config.output_dir).expanduser() if config.output_dir else sentinel_home() / "experiments" / experiment_id
    tracker.write_summary(RunSummary(extra={"output_dir": str(out)}), status="running")
    summary = tracker.stored_summary()   # a resumed run keeps what its first attempt measured

    if resume_checkpoint is None:
        loaded = load_model(config.model, device=config.device)
        model, tokenizer = loaded.model, loaded.tokenizer
        data = load_finetune_data(tokenizer, config.text, config.block_size, max_validation_tokens=config.eval_tokens)
        summary.update(baseline_perplexity=evaluate(model, tokenizer, data), params_before=parameter_count(model),
                       data=data.describe())
        tracker.record_perplexity("baseline", summary.baseline_perplexity)
        _record_samples(tracker, model, tokenizer, config, step=0, label="unpruned")
        teacher = copy.deepcopy(model) if config.distill else None
        batches = analysis_batches(data.train, config.analysis_samples, config.batch_size, loaded.device) \
            if strategy.metrics else None
        plan = prune_by_strategy(model, strategy, batches, config.mode, note=strategy.to_dict())
        tracker.record_pruning(plan, config.mode)
        summary.update(pruned_heads=plan_to_json(plan), heads_pruned=sum(map(len, plan.values())),
                       active_heads=sum(map(len, active_heads(model).values())), params_after=parameter_count(model),
                       perplexity_pruned=evaluate(model, tokenizer, data), strategy=strategy.to_dict())
        tracker.record_perplexity("pruned", summary.perplexity_pruned)
        tracker.write_summary(summary)
        start_step = 0
    else:
        loaded = load_model(resume_checkpoint, device=config.device)
        model, tokenizer = loaded.model, loaded.tokenizer
        data = load_finetune_data(tokenizer, config.text, config.block_size, max_validation_tokens=config.eval_tokens)
        teacher = _unpruned_teacher(config) if config.distill else None
        start_step = int(loaded.record.get("note", {}).get("step", 0))
        logger.info("Resuming experiment %s from %s at step %d", experiment_id, resume_checkpoint, start_step)

    steps = config.steps if config.steps is not None else math.ceil(
        config.epochs * len(data.train) / config.batch_size)
    result = None
    if steps > 0:
        def report(event: ProgressEvent) -> None:
            tracker.record_event(event)
            if on_event is not None:
                on_event(event)

        result = tune(model, tokenizer, data, config.finetune_config(steps), teacher=teacher, on_event=report,
                      should_stop=should_stop, checkpoint_dir=out / "checkpoint", on_checkpoint=on_checkpoint,
                      start_step=start_step)
        summary.update(finetune=describe_result(result), perplexity_after=result.perplexity_after)
        tracker.record_perplexity("finetuned", result.perplexity_after, step=result.steps)
    else:
        summary.perplexity_after = summary.perplexity_pruned
    stopped = result.stopped if result is not None else "completed"
    if stopped != "cancelled":
        _record_samples(tracker, model, tokenizer, config, step=result.steps if result else 0, label="pruned")
        summary.update(model_dir=str(save_model(model, tokenizer, out / "model",
                                                note={"kind": "experiment", "experiment": experiment_id,
                                                      "config": config.to_dict()})))
    summary.status = stopped
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2), encoding="utf-8")
    (out / "progress.json").write_text(json.dumps(tracker.to_dict(), indent=2), encoding="utf-8")
    tracker.write_summary(summary, status="done" if stopped != "cancelled" else "cancelled")
    logger.info("Experiment %s: perplexity %.3f unpruned, %s after pruning, %s after fine-tuning", experiment_id,
                summary.baseline_perplexity if summary.baseline_perplexity is not None else float("nan"),
                summary.perplexity_pruned, summary.perplexity_after)
    return model, tokenizer, summary.to_dict()


def run_experiment_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "experiment" (params: an ExperimentConfig dict)."""
    config = ExperimentConfig.from_dict({k: v for k, v in params.items() if k != "device"} | {"device": ctx.device})
    resume = ctx.resume_checkpoint.path if ctx.resume_checkpoint is not None else None
    if resume is not None and ctx.experiment_id is None:
        raise DataError("Only an experiment job with an experiment record can resume; start it again.")
    _, _, summary = run_experiment(config, ctx.store, experiment_id=ctx.experiment_id,
                                   on_event=lambda event: ctx.report(event, record_metrics=False),
                                   should_stop=lambda: ctx.cancelled, on_checkpoint=ctx.checkpoint,
                                   resume_checkpoint=resume)
    return summary


def submit_experiment(manager: JobManager, config: ExperimentConfig) -> tuple[str, str]:
    """Record the experiment and queue it as a background job; returns (job id, experiment id)."""
    config.validate()
    experiment_id = manager.store.create_experiment(_name(config), config.to_dict(), kind="experiment",
                                                    model=config.model)
    job_id = manager.submit("experiment", config.to_dict(), device=config.device, experiment_id=experiment_id)
    return job_id, experiment_id


def _unpruned_teacher(config: ExperimentConfig) -> nn.Module:
    teacher = load_model(config.model, device=config.device).model
    state = model_state(teacher)
    if state.has_masked_units() or state.has_removed_units():
        raise DataError(f"{config.model} is itself pruned; distil from an unpruned model.")
    return teacher


def _record_samples(tracker: RunRecorder, model: nn.Module, tokenizer: Any, config: ExperimentConfig,
                    step: int, label: str) -> None:
    for prompt in config.prompts:
        result = generate_text(model, tokenizer, prompt, max_new_tokens=config.sample_tokens, greedy=True,
                               seed=config.seed, label=label)
        tracker.record_sample(prompt, result.text, step=step, label=label)


def _name(config: ExperimentConfig) -> str:
    return config.name or f"{config.strategy} {config.pruning_ratio:.0%} of {config.model or 'the bundled model'}"
