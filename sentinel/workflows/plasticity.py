"""UpgrayeddPipeline: plasticity cycles of measure -> prune -> fine-tune -> grow, with a record of every cycle.

    pipeline = UpgrayeddPipeline(model, tokenizer, "entropy", "auto")
    result = pipeline.run_optimization(blocks.dataloader(batch_size=8), num_cycles=3, epochs_per_cycle=1)

Each cycle scores the active heads with the strategy's metrics, prunes `pruning_ratio` of them (mask or
remove), fine-tunes for `epochs_per_cycle` passes over the dataloader's blocks, then grows back
`growth_ratio` of the heads it pruned (`select_heads_to_grow` -> `choose_heads_to_grow` -> `grow_heads`):
fresh weights that fade in over the next cycle's fine-tune, with `lr_multiplier` x the learning rate.
Per cycle it records validation perplexity (after pruning, after fine-tuning, at the end), active heads
and parameters; with a store, as an experiment of kind "plasticity" (through the shared `RunRecorder`, its
summary a `RunSummary`). The steps are sentinel.workflows.steps.

As a background job (kind "plasticity", params a `PlasticityConfig`): `submit_plasticity(manager, config)`;
cancelling it (JobManager.cancel, `sentinel jobs cancel`, the dashboard: all through the store) stops the
running cycle's fine-tune within a step and records the cycles finished so far, status "cancelled".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from sentinel.device import pick_device
from sentinel.errors import DataError, SentinelError
from sentinel.evaluation.size import parameter_count
from sentinel.jobs import JobContext, JobManager, ProgressEvent
from sentinel.metrics.batches import prepare_batches
from sentinel.pruning.growth import choose_heads_to_grow, grow_heads
from sentinel.pruning.masks import active_heads
from sentinel.pruning.plan import plan_to_json
from sentinel.pruning.strategies import BasePruningStrategy, get_strategy
from sentinel.store import Store
from sentinel.training.config import FineTuneConfig, known_settings
from sentinel.training.finetune import FineTuneData
from sentinel.workflows.recorder import RunRecorder
from sentinel.workflows.steps import evaluate, prune_by_strategy, tune
from sentinel.workflows.summary import RunSummary

logger = logging.getLogger(__name__)


@dataclass
class CycleRecord:
    """What one plasticity cycle did and measured."""

    cycle: int
    pruned: dict[str, list[int]]
    grown: dict[str, list[int]]
    perplexity_pruned: float
    perplexity_tuned: float
    perplexity: float            # at the end of the cycle, after growth
    active_heads: int
    parameters: int
    steps: int
    final_loss: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UpgrayeddResult:
    """The unpruned starting point and every cycle's record."""

    baseline_perplexity: float
    baseline_active_heads: int
    baseline_parameters: int
    cycles: list[CycleRecord] = field(default_factory=list)
    experiment_id: str | None = None
    stopped: str = "completed"   # or "cancelled" (the cycles list holds the finished cycles)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpgrayeddResult:
        values = dict(data)
        values["cycles"] = [CycleRecord(**c) for c in data.get("cycles", [])]
        return cls(**values)


class UpgrayeddPipeline:
    """Plasticity cycles on one model (changed in place); see the module docstring."""

    def __init__(self, model: nn.Module, tokenizer: Any, strategy: str | BasePruningStrategy = "entropy",
                 device: str | torch.device = "auto", *, pruning_ratio: float = 0.1, growth_ratio: float = 0.5,
                 mode: str = "mask", learning_rate: float = 1e-4, warmup_steps: int | None = None,
                 lr_multiplier: float = 2.0, analysis_batches: int = 4, eval_dataloader: Iterable | None = None,
                 store: Store | None = None, seed: int = 0) -> None:
        if mode not in ("mask", "remove"):
            raise SentinelError(f"mode must be 'mask' or 'remove', got {mode!r}.")
        if isinstance(strategy, str):
            strategy = get_strategy(strategy, pruning_ratio=pruning_ratio, growth_ratio=growth_ratio, seed=seed,
                                    whole_kv_groups=mode == "remove")
        self.device = pick_device(device)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.strategy = strategy
        self.mode = mode
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.lr_multiplier = lr_multiplier
        self.analysis_batches = analysis_batches
        self.eval_dataloader = eval_dataloader
        self.store = store
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        """The pipeline's settings, for the experiment record."""
        return {**self.strategy.to_dict(), "mode": self.mode, "learning_rate": self.learning_rate,
                "warmup_steps": self.warmup_steps, "lr_multiplier": self.lr_multiplier, "device": str(self.device)}

    def run_optimization(self, dataloader: Iterable, num_cycles: int = 3, epochs_per_cycle: float = 1,
                         should_stop: Callable[[], bool] | None = None,
                         experiment_id: str | None = None) -> UpgrayeddResult:
        """Run `num_cycles` cycles of measure -> prune -> fine-tune -> grow; returns every cycle's record."""
        _check_cycles(num_cycles, epochs_per_cycle)
        blocks, batch_size = _blocks(dataloader)
        if self.eval_dataloader is not None:
            validation, _ = _blocks(self.eval_dataloader)
        else:   # hold out the last tenth of the blocks
            cut = max(1, len(blocks) // 10)
            blocks, validation = blocks[:-cut], blocks[-cut:]
        if not blocks:
            raise DataError("The dataloader holds too few full blocks to train and validate on; give more text.")
        data = FineTuneData(blocks, validation, len(blocks[0]), "dataloader")
        return self.run_cycles(data, batch_size, num_cycles, epochs_per_cycle, should_stop=should_stop,
                               experiment_id=experiment_id)

    def run_cycles(self, data: FineTuneData, batch_size: int, num_cycles: int = 3, epochs_per_cycle: float = 1,
                   should_stop: Callable[[], bool] | None = None, experiment_id: str | None = None,
                   on_event: Callable[[ProgressEvent], None] | None = None) -> UpgrayeddResult:
        """The cycles on prepared training/validation blocks; `should_stop` cancels within a fine-tuning step,
        `on_event` gets every fine-tuning progress event (its message names the cycle)."""
        _check_cycles(num_cycles, epochs_per_cycle)
        steps = max(1, math.ceil(epochs_per_cycle * len(data.train) / batch_size))
        warmup = self.warmup_steps if self.warmup_steps is not None else max(1, steps // 2)
        config = FineTuneConfig(max_steps=steps, learning_rate=self.learning_rate, batch_size=batch_size,
                                block_size=data.block_size, eval_every=0,
                                eval_max_tokens=data.block_size * len(data.validation),
                                device=str(self.device), seed=self.seed)
        recorder = RunRecorder()
        if self.store is not None:
            recorder = RunRecorder.start(
                self.store, f"plasticity: {self.strategy.name} x {num_cycles} cycles",
                {**self.settings(), "strategy": self.strategy.name, "num_cycles": num_cycles,
                 "epochs_per_cycle": epochs_per_cycle, "steps": steps, "batch_size": batch_size},
                "plasticity", experiment_id=experiment_id)
            recorder.set_status("running")
        result = UpgrayeddResult(evaluate(self.model, self.tokenizer, data),
                                 _count(active_heads(self.model)), parameter_count(self.model),
                                 experiment_id=recorder.experiment_id)
        recorder.record_metrics({"perplexity": result.baseline_perplexity,
                                 "active_heads": result.baseline_active_heads,
                                 "parameters": result.baseline_parameters}, 0)
        for cycle in range(1, num_cycles + 1):
            if should_stop is not None and should_stop():
                result.stopped = "cancelled"
                break
            record = self._cycle(cycle, data, config, warmup, should_stop, on_event)
            if record is None:   # cancelled during the cycle's fine-tune
                result.stopped = "cancelled"
                break
            result.cycles.append(record)
            recorder.record_pruning(record.pruned, self.mode, stage=f"cycle {cycle}")
            if record.grown:
                recorder.record_pruning(record.grown, "grow", stage=f"cycle {cycle}")
            recorder.record_metrics({"perplexity": record.perplexity, "perplexity_pruned": record.perplexity_pruned,
                                     "perplexity_tuned": record.perplexity_tuned, "active_heads": record.active_heads,
                                     "parameters": record.parameters}, cycle)
            logger.info("Cycle %d: perplexity %.3f pruned, %.3f tuned, %.3f end; %d active heads, %d parameters",
                        cycle, record.perplexity_pruned, record.perplexity_tuned, record.perplexity,
                        record.active_heads, record.parameters)
        recorder.write_summary(plasticity_summary(result),
                               status="done" if result.stopped == "completed" else "cancelled")
        return result

    def _cycle(self, cycle: int, data: FineTuneData, config: FineTuneConfig, warmup: int,
               should_stop: Callable[[], bool] | None = None,
               on_event: Callable[[ProgressEvent], None] | None = None) -> CycleRecord | None:
        """One cycle; None when `should_stop` cancelled its fine-tune (the pruning stays applied)."""
        seed = self.seed + cycle
        batches = None
        if self.strategy.metrics:
            ids = torch.tensor(data.train[: self.analysis_batches * config.batch_size])   # [n, block]
            batches = prepare_batches(list(ids.split(config.batch_size)), device=self.device)
        plan = prune_by_strategy(self.model, self.strategy, batches, self.mode,
                                 note={**self.strategy.to_dict(), "cycle": cycle})
        tuned = tune(self.model, self.tokenizer, data, FineTuneConfig.from_dict({**config.to_dict(), "seed": seed}),
                     should_stop=should_stop,
                     on_event=None if on_event is None else
                     lambda event: on_event(replace(event, message=f"cycle {cycle}: {event.message}".rstrip(": "))))
        if tuned.stopped == "cancelled":
            return None
        counts = self.strategy.select_heads_to_grow(self.model, plan)
        grow_plan = choose_heads_to_grow(self.model, counts, plan, seed=seed)
        if grow_plan:
            grow_heads(self.model, grow_plan, warmup_steps=warmup, lr_multiplier=self.lr_multiplier, seed=seed)
        return CycleRecord(
            cycle=cycle, pruned=plan_to_json(plan), grown=plan_to_json(grow_plan), perplexity_pruned=tuned.perplexity_before,
            perplexity_tuned=tuned.perplexity_after,
            perplexity=evaluate(self.model, self.tokenizer, data),
            active_heads=_count(active_heads(self.model)), parameters=parameter_count(self.model),
            steps=tuned.steps, final_loss=tuned.last_loss,
        )


def plasticity_summary(result: UpgrayeddResult) -> RunSummary:
    """The run's RunSummary: baseline and final perplexity, the last cycle's heads and parameters, every cycle."""
    summary = RunSummary(status=result.stopped, baseline_perplexity=result.baseline_perplexity,
                         params_before=result.baseline_parameters, extra={"cycles": [c.to_dict() for c in result.cycles]})
    if result.cycles:
        last = result.cycles[-1]
        summary.update(perplexity_after=last.perplexity, active_heads=last.active_heads, params_after=last.parameters,
                       parameters=last.parameters)
    return summary


def _check_cycles(num_cycles: int, epochs_per_cycle: float) -> None:
    if num_cycles < 1 or not epochs_per_cycle > 0:
        raise SentinelError(f"num_cycles must be >= 1 and epochs_per_cycle > 0 (got {num_cycles}, "
                            f"{epochs_per_cycle}).")


def _count(plan: dict[int, list[int]]) -> int:
    return sum(len(v) for v in plan.values())


def _blocks(dataloader: Iterable) -> tuple[list[list[int]], int]:
    """Full-length, unpadded rows of a dataloader's batches as token blocks, and its batch size."""
    batches = prepare_batches(dataloader)
    width = batches[0]["input_ids"].shape[1]
    blocks = [row.tolist() for batch in batches for row, mask in zip(batch["input_ids"], batch["attention_mask"])
              if len(row) == width and bool(mask.all())]
    batch_size = getattr(dataloader, "batch_size", None) or batches[0]["input_ids"].shape[0]
    return blocks, batch_size


@dataclass
class PlasticityConfig:
    """A plasticity run as a job, JSON-ready: model, data, cycles, pruning/growth, and one `FineTuneConfig`.

    The fine-tuning settings (learning rate, batch and block size, validation tokens, seed, device) are the
    nested `finetune` config; its max_steps is replaced per cycle by `epochs_per_cycle` passes over the blocks.
    """

    model: str | None = None              # hub id or folder; None = the bundled model
    text: str | None = None               # training text (sentinel.data.load_texts); None = the bundled corpus
    strategy: str = "entropy"
    num_cycles: int = 3
    epochs_per_cycle: float = 1.0
    pruning_ratio: float = 0.1
    growth_ratio: float = 0.5
    mode: str = "mask"
    lr_multiplier: float = 2.0
    warmup_steps: int | None = None
    analysis_batches: int = 4
    finetune: FineTuneConfig = field(default_factory=lambda: FineTuneConfig(eval_every=0))
    name: str | None = None

    def validate(self) -> None:
        """Raise a SentinelError naming the first bad setting (before any model is loaded)."""
        get_strategy(self.strategy, pruning_ratio=self.pruning_ratio, growth_ratio=self.growth_ratio,
                     seed=self.finetune.seed)
        if self.mode not in ("mask", "remove"):
            raise SentinelError(f"mode must be 'mask' or 'remove', got {self.mode!r}.")
        _check_cycles(self.num_cycles, self.epochs_per_cycle)
        if self.analysis_batches < 1:
            raise SentinelError(f"analysis_batches must be at least 1, got {self.analysis_batches}.")
        self.finetune.validate()

    def pipeline(self, model: nn.Module, tokenizer: Any, store: Store | None = None) -> UpgrayeddPipeline:
        """The UpgrayeddPipeline these settings describe, on `model`."""
        tune_config = self.finetune
        return UpgrayeddPipeline(model, tokenizer, self.strategy, tune_config.device, pruning_ratio=self.pruning_ratio,
                                 growth_ratio=self.growth_ratio, mode=self.mode, learning_rate=tune_config.learning_rate,
                                 warmup_steps=self.warmup_steps, lr_multiplier=self.lr_multiplier,
                                 analysis_batches=self.analysis_batches, store=store, seed=tune_config.seed)

    def run_name(self) -> str:
        return self.name or f"plasticity: {self.strategy} x {self.num_cycles} cycles"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlasticityConfig:
        values = known_settings(cls, data, "plasticity")
        values["finetune"] = FineTuneConfig.from_dict(dict(values.get("finetune") or {"eval_every": 0}))
        return cls(**values)


def run_plasticity_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "plasticity" (params: a PlasticityConfig dict); cancellable through the
    store like every job. A resumed job starts over from the model it names (there is no mid-run checkpoint)."""
    from sentinel.models.loading import load_model
    from sentinel.training.finetune import load_finetune_data

    config = PlasticityConfig.from_dict({k: v for k, v in params.items() if k != "device"})
    config.finetune.device = ctx.device
    config.validate()
    loaded = load_model(config.model, device=ctx.device)
    data = load_finetune_data(loaded.tokenizer, config.text, config.finetune.block_size,
                              max_validation_tokens=config.finetune.eval_max_tokens)
    pipeline = config.pipeline(loaded.model, loaded.tokenizer, store=ctx.store)
    result = pipeline.run_cycles(data, config.finetune.batch_size, config.num_cycles, config.epochs_per_cycle,
                                 should_stop=lambda: ctx.cancelled, experiment_id=ctx.experiment_id,
                                 on_event=lambda event: ctx.report(event, record_metrics=False))
    return {"experiment_id": result.experiment_id, "cycles_done": len(result.cycles),
            **plasticity_summary(result).to_dict()}


def submit_plasticity(manager: JobManager, config: PlasticityConfig) -> tuple[str, str]:
    """Record the plasticity run and queue it as a background job; returns (job id, experiment id)."""
    config.validate()
    experiment_id = manager.store.create_experiment(config.run_name(), config.to_dict(), kind="plasticity",
                                                    model=config.model)
    job_id = manager.submit("plasticity", config.to_dict(), device=config.finetune.device,
                            experiment_id=experiment_id)
    return job_id, experiment_id
