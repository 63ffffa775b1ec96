"""The workflow steps every orchestrator shares: measure -> select -> prune -> evaluate -> tune.

Each is a small typed function over the library's own entry points (compute_scores, the strategies'
selection, apply_plan, perplexity, finetune), so the experiment, the benchmark and the plasticity
pipeline do each step the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sentinel.evaluation.perplexity import perplexity
from sentinel.jobs import ProgressEvent
from sentinel.metrics import compute_scores
from sentinel.pruning.apply import apply_plan
from sentinel.pruning.plan import HeadPlan, PruningPlan
from sentinel.pruning.strategies import BasePruningStrategy
from sentinel.training.config import FineTuneConfig, FineTuneResult
from sentinel.training.finetune import FineTuneData, finetune


def analysis_batches(blocks: Sequence[Sequence[int]], count: int, batch_size: int,
                     device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The first `count` token blocks as batches for the metrics (sentinel.metrics.prepare_batches)."""
    from sentinel.metrics.batches import prepare_batches

    ids = torch.tensor([list(b) for b in blocks[:count]], dtype=torch.long)   # [count, block]
    return prepare_batches(list(ids.split(batch_size)), device=device)


def measure(model: nn.Module, strategy: BasePruningStrategy, batches: list[dict[str, torch.Tensor]] | None,
            seed: int | None = None) -> dict[str, Any]:
    """The strategy's metrics on `batches` ({} for a strategy that needs none, e.g. random)."""
    if not strategy.metrics:
        return {}
    return compute_scores(model, strategy.metrics, batches, seed=strategy.seed if seed is None else seed)


def select(model: nn.Module, strategy: BasePruningStrategy, scores: Mapping[str, Any]) -> HeadPlan:
    """The heads the strategy prunes given its scores."""
    return strategy.select_heads_to_prune(model, scores)


def prune(model: nn.Module, plan: HeadPlan | PruningPlan, mode: str, note: dict | None = None) -> None:
    """Mask or remove the plan's units (apply_plan), recording `note` in the model's pruning history."""
    apply_plan(model, plan if isinstance(plan, PruningPlan) else {"heads": plan}, mode, note=note)


def prune_by_strategy(model: nn.Module, strategy: BasePruningStrategy, batches: list[dict[str, torch.Tensor]] | None,
                      mode: str, note: dict | None = None) -> HeadPlan:
    """measure -> select -> prune with one strategy; returns the plan."""
    plan = select(model, strategy, measure(model, strategy, batches))
    prune(model, plan, mode, note=note)
    return plan


def evaluate(model: nn.Module, tokenizer: Any, data: FineTuneData, batch_size: int = 8) -> float:
    """Perplexity on the validation blocks (non-overlapping windows of the block size)."""
    return perplexity(model, tokenizer, data.validation, seq_len=data.block_size, batch_size=batch_size).perplexity


validation_perplexity = evaluate   # the name the orchestrators used before sentinel.workflows


def tune(model: nn.Module, tokenizer: Any, data: FineTuneData, config: FineTuneConfig, *,
         teacher: nn.Module | None = None, on_event: Callable[[ProgressEvent], None] | None = None,
         should_stop: Callable[[], bool] | None = None, checkpoint_dir: Path | None = None,
         on_checkpoint: Callable[[Path, int], None] | None = None, start_step: int = 0) -> FineTuneResult:
    """Recovery fine-tuning (or distillation from `teacher`) of the pruned model; see sentinel.training.finetune."""
    return finetune(model, tokenizer, data, config, teacher=teacher, on_event=on_event, should_stop=should_stop,
                    checkpoint_dir=checkpoint_dir, on_checkpoint=on_checkpoint, start_step=start_step)
