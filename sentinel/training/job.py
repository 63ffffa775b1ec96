"""The "finetune" job: load (or resume) a model, optionally prune it, fine-tune it, save it, record it.

Params are a `FineTuneJob` as a dict, so the store alone can restart the job after a crash: a resumed job
loads its last checkpoint (whose pruning record restores masks and removals) and continues the step count
and learning-rate schedule from there. Output folder layout:

    <out>/model/        the fine-tuned model (when the run completes or stops early)
    <out>/checkpoint/   the last checkpoint (kept when cancelled or interrupted, removed on success)
    <out>/result.json   the FineTuneResult (curves included)
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from sentinel.errors import DataError
from sentinel.files import prepare_run_folder, remove_owned_folder, write_file_atomically
from sentinel.jobs import JobContext, ProgressEvent
from sentinel.models.state import model_state
from sentinel.models.loading import LoadedModel, load_model, save_model
from sentinel.pruning import apply_plan
from sentinel.pruning.plan import plan_to_json
from sentinel.store import CheckpointRecord
from sentinel.training.config import FineTuneConfig
from sentinel.training.finetune import describe_result, finetune, load_finetune_data

logger = logging.getLogger(__name__)


@dataclass
class FineTuneJob:
    """Everything a fine-tune job needs, JSON-ready: model source, data, settings, optional pruning, output."""

    out: str
    config: FineTuneConfig = field(default_factory=FineTuneConfig)
    model: str | None = None                 # hub id or folder; None = the bundled model
    text: str | None = None                  # training text source (sentinel.data.load_texts); None = bundled
    validation_text: str | None = None
    teacher: str | None = None               # unpruned teacher for distillation; None = `model` unmasked
    prune_plan: dict[str, list[int]] | None = None   # heads to prune before training (original indices)
    prune_mode: str = "mask"
    dtype: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FineTuneJob:
        values = {k: v for k, v in data.items() if k != "device"}   # the job manager adds the device it ran on
        values["config"] = FineTuneConfig.from_dict(dict(data.get("config", {})))
        return cls(**values)


def load_teacher(model_source: str | None, teacher_source: str | None, device: str, dtype: str | None) -> nn.Module:
    """The unpruned model to distil from: `teacher_source`, else `model_source` with every mask lifted."""
    loaded = load_model(teacher_source if teacher_source is not None else model_source, device=device, dtype=dtype)
    state = model_state(loaded.model)
    if teacher_source is None and state.has_removed_units():
        raise DataError(f"{loaded.source} has physically removed heads, neurons or layers, so it cannot serve as its "
                        "own unpruned teacher; give the original model as the teacher (--teacher).")
    state.unmask_all()
    return loaded.model


def teacher_from(model: nn.Module) -> nn.Module:
    """An unpruned copy of an in-memory model whose units are only masked (masked weights are kept intact)."""
    if model_state(model).has_removed_units():
        raise DataError("This model has physically removed heads, neurons or layers; distil from a copy taken "
                        "before removal.")
    teacher = copy.deepcopy(model)
    model_state(teacher).unmask_all()
    return teacher


def run_finetune(
    job: FineTuneJob,
    device: str,
    report: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
    resume: CheckpointRecord | None = None,
) -> dict[str, Any]:
    """Run one fine-tune job to the end (or cancellation); returns a JSON summary."""
    out = prepare_run_folder(job.out)   # new, empty or an earlier Sentinel run folder; marked as ours
    config = FineTuneConfig.from_dict({**job.config.to_dict(), "device": device})
    config.validate()
    # Under accelerate/torchrun every process loads on the CPU and the Trainer places it on its own GPU;
    # only the first process saves and writes.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    main_process = int(os.environ.get("RANK", "0")) == 0
    load_device = "cpu" if distributed else device
    start_step = 0
    if resume is not None:
        loaded = load_model(resume.path, device=load_device, dtype=job.dtype)
        start_step = int(loaded.record.get("note", {}).get("step", resume.step))
        logger.info("Resuming from %s at step %d", resume.path, start_step)
    else:
        loaded = load_model(job.model, device=load_device, dtype=job.dtype)
        _prune(loaded, job)
    teacher = load_teacher(job.model, job.teacher, load_device, job.dtype) if config.distill else None
    data = load_finetune_data(loaded.tokenizer, job.text, config.block_size, job.validation_text,
                              max_validation_tokens=config.eval_max_tokens)
    result = finetune(loaded.model, loaded.tokenizer, data, config, teacher=teacher, on_event=report,
                      should_stop=should_stop, checkpoint_dir=out / "checkpoint", on_checkpoint=on_checkpoint,
                      start_step=start_step)
    summary = describe_result(result)
    summary["data"] = data.describe()
    if not main_process:
        return summary
    if result.stopped != "cancelled":
        note = {"kind": "finetuned", "from": job.model or "bundled", "result": summary, "config": config.to_dict()}
        summary["model"] = str(save_model(loaded.model, loaded.tokenizer, out / "model", note=note))
        remove_owned_folder(out / "checkpoint")
        summary["checkpoint"] = None
    write_file_atomically(out / "result.json", json.dumps({**result.to_dict(), "data": data.describe()}, indent=2))
    return summary


def run_finetune_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "finetune"; records the summary on the job's experiment."""
    job = FineTuneJob.from_dict(params)
    if ctx.experiment_id is not None and job.prune_plan and ctx.attempt == 1:
        ctx.store.record_pruned_heads(ctx.experiment_id, job.prune_plan, job.prune_mode, stage="before-finetune")
    summary = run_finetune(job, ctx.device, report=ctx.report, should_stop=lambda: ctx.cancelled,
                           on_checkpoint=ctx.checkpoint, resume=ctx.resume_checkpoint)
    if ctx.experiment_id is not None:
        ctx.store.update_experiment(ctx.experiment_id, status=summary["stopped"], summary=summary)
        if summary.get("model"):
            ctx.store.add_checkpoint(ctx.experiment_id, summary["model"], summary["steps"], job_id=ctx.job_id)
    return summary


def _prune(loaded: LoadedModel, job: FineTuneJob) -> None:
    if not job.prune_plan:
        return
    if job.prune_mode not in ("mask", "remove"):
        raise DataError(f"prune_mode must be 'mask' or 'remove', got {job.prune_mode!r}.")
    plan = {int(layer): list(heads) for layer, heads in job.prune_plan.items()}
    done = apply_plan(loaded.model, {"heads": plan}, job.prune_mode).heads
    logger.info("Pruned (%s) %s before fine-tuning", job.prune_mode, plan_to_json(done))
