"""Fine-tune a (pruned) causal LM with transformers' Trainer: progress events, cancellation, checkpoints.

    data = load_finetune_data(tokenizer, text=None, block_size=128)      # None: the bundled corpus
    result = finetune(model, tokenizer, data, FineTuneConfig(max_steps=100), teacher=None)

Masked heads stay masked with unchanged weights, removed heads stay removed (shapes never change),
grown heads fade in; see sentinel.training.callbacks. A sparse model's zeros (weight masks, unstructured
or N:M) stay exactly zero: see sentinel.sparsity.schedule.hold_zeros. With `teacher` (the unpruned model) the loss is
the distillation mix documented in sentinel.training.distill. The same code runs under
`accelerate launch -m sentinel finetune ...` or `torchrun -m sentinel finetune ...` on several GPUs:
the Trainer picks up the distributed environment.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import EarlyStoppingCallback, PrinterCallback, TrainerCallback, TrainingArguments

from sentinel.data import cut_blocks, join_documents, load_texts
from sentinel.device import pick_device
from sentinel.errors import DataError, UnsupportedModelError
from sentinel.jobs import ProgressEvent
from sentinel.models.heads import model_heads
from sentinel.models.loading import save_model
from sentinel.sparsity.schedule import hold_zeros
from sentinel.training.callbacks import HeadSliceGuard, ProgressCallback, StopCallback
from sentinel.training.config import FineTuneConfig, FineTuneResult
from sentinel.training.distill import DistillationTrainer
from sentinel.training.trainer import SentinelTrainer, TokenBlocks

logger = logging.getLogger(__name__)


@dataclass
class FineTuneData:
    """Training and validation token blocks of one block size, and where they came from."""

    train: list[list[int]]
    validation: list[list[int]]
    block_size: int
    source: str

    def describe(self) -> dict[str, Any]:
        """Counts for logs, the store and --json output (not the tokens themselves)."""
        return {"source": self.source, "block_size": self.block_size, "train_blocks": len(self.train),
                "validation_blocks": len(self.validation),
                "train_tokens": len(self.train) * self.block_size,
                "validation_tokens": len(self.validation) * self.block_size}


def load_finetune_data(tokenizer: Any, text: str | Path | None = None, block_size: int = 128,
                       validation_text: str | Path | None = None, validation_fraction: float = 0.1,
                       max_validation_tokens: int | None = None) -> FineTuneData:
    """Blocks from a text source (see sentinel.data.load_texts; None = the bundled corpus's train split).

    Validation comes from `validation_text`, else the bundled validation split when training on the
    bundled corpus, else the last `validation_fraction` of the tokens of `text`.
    """
    if not 0 < validation_fraction < 1:
        raise DataError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    source = "bundled:train" if text is None else str(text)
    train_ids = join_documents(tokenizer, load_texts(source))
    if validation_text is not None or text is None:
        val_source = "bundled:validation" if validation_text is None else str(validation_text)
        val_ids = join_documents(tokenizer, load_texts(val_source))
    else:
        cut = int(len(train_ids) * (1 - validation_fraction))
        train_ids, val_ids = train_ids[:cut], train_ids[cut:]
    if max_validation_tokens is not None:
        val_ids = val_ids[:max_validation_tokens]
    train, validation = cut_blocks(train_ids, block_size), cut_blocks(val_ids, block_size)
    if not train or not validation:
        raise DataError(f"{source} gives {len(train_ids)} training and {len(val_ids)} validation tokens; each needs "
                        f"at least one block of {block_size}. Give more text or a smaller block size.")
    return FineTuneData(train, validation, block_size, source)


def finetune(
    model: nn.Module,
    tokenizer: Any,
    data: FineTuneData,
    config: FineTuneConfig,
    *,
    teacher: nn.Module | None = None,
    on_event: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
    start_step: int = 0,
    callbacks: Sequence[TrainerCallback] = (),
) -> FineTuneResult:
    """Train `model` in place for `config.max_steps - start_step` steps; returns curves and the stop reason.

    Checkpoints (every `config.checkpoint_every` steps, and when cancelled) go to `checkpoint_dir` through
    `save_model`, which replaces the folder atomically; `on_checkpoint(path, step)` is told of each one.
    """
    config.validate()
    if not model_heads(model).adapter.is_causal(model.config):
        raise UnsupportedModelError("Fine-tuning supports causal language models (GPT-2, Llama, OPT, GPT-NeoX ...); "
                                    f"{type(model).__name__} is a masked LM.")
    if config.distill and teacher is None:
        raise DataError("distill=True needs the unpruned teacher model; pass teacher=...")
    if data.block_size != config.block_size:
        raise DataError(f"The data was cut into blocks of {data.block_size} but the config says "
                        f"{config.block_size}; load the data with the config's block_size.")
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and config.block_size > max_positions:
        raise DataError(f"block_size {config.block_size} exceeds the model's {max_positions} positions.")
    remaining = config.max_steps - start_step
    if remaining <= 0:
        raise DataError(f"Nothing left to train: the run is at step {start_step} of {config.max_steps}.")
    device = pick_device(config.device)
    zeros = hold_zeros(model, callbacks)   # a sparse model's zeros (its weight masks) stay zero throughout
    scratch = Path(tempfile.mkdtemp(prefix="sentinel-trainer-"))   # the Trainer's output_dir; it saves nothing
    try:   # the scratch folder is removed whatever happens, even if the Trainer cannot be built
        args = _training_arguments(config, remaining, device.type == "cpu", scratch, seed=config.seed + start_step)
        progress = ProgressCallback(config.max_steps, start_step,
                                    config.batch_size * config.gradient_accumulation_steps * args.world_size
                                    * config.block_size, on_event)
        saved: list[tuple[Path, int]] = []

        def save(step: int) -> None:
            if checkpoint_dir is None or not trainer.is_world_process_zero():
                return
            note = {"kind": "checkpoint", "step": step, "max_steps": config.max_steps, "config": config.to_dict()}
            with zeros.folded():
                path = save_model(model, tokenizer, checkpoint_dir, note=note)
            saved.append((path, step))
            if on_checkpoint is not None:
                on_checkpoint(path, step)

        stop = StopCallback(should_stop, config.checkpoint_every, start_step, save)
        held = [zeros.callback] if zeros.callback is not None else []
        extra: list[TrainerCallback] = [HeadSliceGuard(model), *held, progress, stop, *callbacks]
        if config.early_stopping_patience:
            extra.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
        common = dict(model=model, args=args, train_dataset=TokenBlocks(data.train),
                      eval_dataset=TokenBlocks(data.validation), processing_class=tokenizer, callbacks=extra,
                      start_step=start_step)
        if config.distill:
            trainer: SentinelTrainer = DistillationTrainer(**common, teacher=teacher, alpha=config.distill_alpha,
                                                           temperature=config.distill_temperature)
            progress.loss_parts = lambda: (float(trainer.last_parts.kl), float(trainer.last_parts.lm))
        else:
            trainer = SentinelTrainer(**common)
        trainer.remove_callback(PrinterCallback)   # our ProgressCallback reports; nothing prints to stdout
        before = trainer.evaluate()["eval_perplexity"]
        trainer.train()
        final_step = start_step + trainer.state.global_step
        if not progress.evaluations or progress.evaluations[-1][0] != final_step:
            trainer.evaluate()
        after = progress.evaluations[-1][1]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        zeros.finish()
        model.eval()
    if stop.cancelled:
        stopped = "cancelled"
        if not saved or saved[-1][1] != final_step:
            save(final_step)
    elif trainer.state.global_step < remaining:
        stopped = "early_stopped"
    else:
        stopped = "completed"
    result = FineTuneResult(
        steps=final_step, max_steps=config.max_steps, stopped=stopped, perplexity_before=before,
        perplexity_after=after, train_tokens_per_second=progress.tokens_per_second(trainer.state),
        seconds=progress.train_seconds, losses=progress.losses, evaluations=progress.evaluations,
        checkpoint=str(saved[-1][0]) if saved else None, start_step=start_step,
        distill_parts=progress.distill_parts,
    )
    logger.info("Fine-tuning %s at step %d/%d: perplexity %.3f -> %.3f", stopped, final_step, config.max_steps,
                before, after)
    return result


def _training_arguments(config: FineTuneConfig, steps: int, on_cpu: bool, output_dir: Path, seed: int) -> TrainingArguments:
    """TrainingArguments for our loop: no Trainer checkpoints or reports; evaluation and early stopping by steps."""
    periodic = config.eval_every > 0
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_strategy="steps",
        logging_steps=config.log_every,
        eval_strategy="steps" if periodic else "no",
        eval_steps=config.eval_every if periodic else None,
        metric_for_best_model="perplexity" if config.early_stopping_patience else None,
        greater_is_better=False if config.early_stopping_patience else None,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        use_cpu=on_cpu,
        fp16=config.mixed_precision == "fp16",
        bf16=config.mixed_precision == "bf16",
        seed=seed,
    )


def describe_result(result: FineTuneResult) -> dict[str, Any]:
    """A compact summary of a fine-tune for the store and --json (without the full curves)."""
    data = {k: v for k, v in asdict(result).items() if k not in ("losses", "evaluations", "distill_parts")}
    data["first_loss"], data["last_loss"] = result.first_loss, result.last_loss
    if result.distill_parts:
        data["last_distill_kl"], data["last_lm_loss"] = result.distill_parts[-1][1:]
    return data
