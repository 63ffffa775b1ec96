"""SentinelTrainer: transformers' Trainer with honest perplexity evaluation and resumable schedules.

Everything else (optimizer, clipping, mixed precision, accumulation, multi-GPU via accelerate/torchrun)
is the Trainer's own.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer
from transformers.optimization import get_scheduler

from sentinel.evaluation.perplexity import perplexity


class TokenBlocks(torch.utils.data.Dataset):
    """Equal-length token blocks as {input_ids, labels} examples (labels = inputs; the model shifts them)."""

    def __init__(self, blocks: list[list[int]]) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.blocks[index], dtype=torch.long)   # [block]
        return {"input_ids": ids, "labels": ids.clone()}


class SentinelTrainer(Trainer):
    """Trainer whose evaluation is `sentinel.evaluation.perplexity` over the validation blocks.

    `start_step` > 0 (a resumed run) builds the learning-rate schedule for the whole run and starts it at
    that step, so warm-up and decay continue where the interrupted run left them.
    """

    def __init__(self, *args: Any, start_step: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start_step = start_step

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        result = perplexity(self.model, self.processing_class, dataset.blocks, seq_len=len(dataset.blocks[0]),
                            batch_size=self.args.per_device_eval_batch_size)
        metrics = {
            f"{metric_key_prefix}_loss": result.nll,
            f"{metric_key_prefix}_perplexity": result.perplexity,
            f"{metric_key_prefix}_tokens": float(result.tokens_evaluated),
            f"{metric_key_prefix}_seconds": result.seconds,
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        if self.lr_scheduler is not None:
            return self.lr_scheduler
        if self.start_step == 0:
            scheduler = super().create_scheduler(num_training_steps, optimizer)
            _warm_up_from_first_step(scheduler, self.args.get_warmup_steps(num_training_steps))
            return scheduler
        optimizer = optimizer if optimizer is not None else self.optimizer
        total = num_training_steps + self.start_step
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])   # LambdaLR needs it to start mid-schedule
        self.lr_scheduler = get_scheduler(
            self.args.lr_scheduler_type, optimizer=optimizer, num_warmup_steps=self.args.get_warmup_steps(total),
            num_training_steps=total, scheduler_specific_kwargs={"last_epoch": self.start_step - 1},
        )
        _warm_up_from_first_step(self.lr_scheduler, self.args.get_warmup_steps(total))
        return self.lr_scheduler


def _warm_up_from_first_step(scheduler: Any, warmup: int) -> None:
    """Make warm-up step s (0-based) use lr × (s + 1) / (warmup + 1) instead of transformers' s / warmup, whose
    first step has learning rate 0 (a run of one step would not train at all); after warm-up nothing changes."""
    if warmup <= 0:
        return
    scheduler.lr_lambdas = [lambda step, after=f: (step + 1) / (warmup + 1) if step < warmup else after(step)
                            for f in scheduler.lr_lambdas]
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
