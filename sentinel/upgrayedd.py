"""UpgrayeddPipeline: plasticity cycles of measure -> prune -> fine-tune -> grow, with a record of every cycle.

    pipeline = UpgrayeddPipeline(model, tokenizer, "entropy", "auto")
    result = pipeline.run_optimization(blocks.dataloader(batch_size=8), num_cycles=3, epochs_per_cycle=1)

Each cycle scores the active heads with the strategy's metrics, prunes `pruning_ratio` of them (mask or
remove), fine-tunes for `epochs_per_cycle` passes over the dataloader's blocks, then grows back
`growth_ratio` of the heads it pruned (`select_heads_to_grow` -> `choose_heads_to_grow` -> `grow_heads`):
fresh weights that fade in over the next cycle's fine-tune, with `lr_multiplier` x the learning rate.
Per cycle it records validation perplexity (after pruning, after fine-tuning, at the end), active heads
and parameters; with a store, as an experiment of kind "plasticity".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from sentinel.device import pick_device
from sentinel.errors import DataError, SentinelError
from sentinel.evaluation.size import parameter_count
from sentinel.metrics.batches import prepare_batches
from sentinel.pruning.experiment_runner import prune_by_strategy, validation_perplexity
from sentinel.pruning.growth import choose_heads_to_grow, grow_heads
from sentinel.pruning.masks import active_heads
from sentinel.pruning.plan import plan_to_json
from sentinel.pruning.strategies import BasePruningStrategy, get_strategy
from sentinel.store import Store
from sentinel.training.config import FineTuneConfig
from sentinel.training.finetune import FineTuneData, finetune

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

    def run_optimization(self, dataloader: Iterable, num_cycles: int = 3, epochs_per_cycle: float = 1) -> UpgrayeddResult:
        """Run `num_cycles` cycles of measure -> prune -> fine-tune -> grow; returns every cycle's record."""
        if num_cycles < 1 or not epochs_per_cycle > 0:
            raise SentinelError(f"num_cycles must be >= 1 and epochs_per_cycle > 0 (got {num_cycles}, "
                                f"{epochs_per_cycle}).")
        blocks, batch_size = _blocks(dataloader)
        if self.eval_dataloader is not None:
            validation, _ = _blocks(self.eval_dataloader)
        else:   # hold out the last tenth of the blocks
            cut = max(1, len(blocks) // 10)
            blocks, validation = blocks[:-cut], blocks[-cut:]
        if not blocks:
            raise DataError("The dataloader holds too few full blocks to train and validate on; give more text.")
        data = FineTuneData(blocks, validation, len(blocks[0]), "dataloader")
        steps = max(1, math.ceil(epochs_per_cycle * len(blocks) / batch_size))
        warmup = self.warmup_steps if self.warmup_steps is not None else max(1, steps // 2)
        config = FineTuneConfig(max_steps=steps, learning_rate=self.learning_rate, batch_size=batch_size,
                                block_size=data.block_size, eval_every=0,
                                eval_max_tokens=data.block_size * len(data.validation),
                                device=str(self.device), seed=self.seed)
        experiment = None
        if self.store is not None:
            experiment = self.store.create_experiment(
                f"plasticity: {self.strategy.name} x {num_cycles} cycles",
                {**self.settings(), "strategy": self.strategy.name, "num_cycles": num_cycles,
                 "epochs_per_cycle": epochs_per_cycle, "steps": steps, "batch_size": batch_size},
                kind="plasticity")
        result = UpgrayeddResult(validation_perplexity(self.model, self.tokenizer, data),
                                 _count(active_heads(self.model)), parameter_count(self.model),
                                 experiment_id=experiment)
        self._log(experiment, {"perplexity": result.baseline_perplexity, "active_heads": result.baseline_active_heads,
                               "parameters": result.baseline_parameters}, 0)
        for cycle in range(1, num_cycles + 1):
            record = self._cycle(cycle, data, config, warmup)
            result.cycles.append(record)
            if experiment is not None:
                self.store.record_pruned_heads(experiment, record.pruned, self.mode, stage=f"cycle {cycle}")
                if record.grown:
                    self.store.record_pruned_heads(experiment, record.grown, "grow", stage=f"cycle {cycle}")
            self._log(experiment, {"perplexity": record.perplexity, "perplexity_pruned": record.perplexity_pruned,
                                   "perplexity_tuned": record.perplexity_tuned, "active_heads": record.active_heads,
                                   "parameters": record.parameters}, cycle)
            logger.info("Cycle %d: perplexity %.3f pruned, %.3f tuned, %.3f end; %d active heads, %d parameters",
                        cycle, record.perplexity_pruned, record.perplexity_tuned, record.perplexity,
                        record.active_heads, record.parameters)
        if experiment is not None:
            last = result.cycles[-1]
            self.store.update_experiment(experiment, status="done", summary={
                "baseline_perplexity": result.baseline_perplexity, "perplexity_after": last.perplexity,
                "active_heads": last.active_heads, "parameters": last.parameters,
                "cycles": [c.to_dict() for c in result.cycles]})
        return result

    def _cycle(self, cycle: int, data: FineTuneData, config: FineTuneConfig, warmup: int) -> CycleRecord:
        seed = self.seed + cycle
        batches = None
        if self.strategy.metrics:
            ids = torch.tensor(data.train[: self.analysis_batches * config.batch_size])   # [n, block]
            batches = prepare_batches(list(ids.split(config.batch_size)), device=self.device)
        plan = prune_by_strategy(self.model, self.strategy, batches, self.mode,
                                 note={**self.strategy.to_dict(), "cycle": cycle})
        tuned = finetune(self.model, self.tokenizer, data, FineTuneConfig.from_dict({**config.to_dict(), "seed": seed}))
        counts = self.strategy.select_heads_to_grow(self.model, plan)
        grow_plan = choose_heads_to_grow(self.model, counts, plan, seed=seed)
        if grow_plan:
            grow_heads(self.model, grow_plan, warmup_steps=warmup, lr_multiplier=self.lr_multiplier, seed=seed)
        return CycleRecord(
            cycle=cycle, pruned=plan_to_json(plan), grown=plan_to_json(grow_plan), perplexity_pruned=tuned.perplexity_before,
            perplexity_tuned=tuned.perplexity_after,
            perplexity=validation_perplexity(self.model, self.tokenizer, data),
            active_heads=_count(active_heads(self.model)), parameters=parameter_count(self.model),
            steps=tuned.steps, final_loss=tuned.last_loss,
        )

    def _log(self, experiment: str | None, values: dict[str, float], step: int) -> None:
        if experiment is not None:
            self.store.log_metrics(experiment, values, step)


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
