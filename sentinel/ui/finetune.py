"""Fine-tuning from the dashboard: hand the session's model to a background job and read the job back.

The session's model (with its masks and removals) is saved with `save_model` under the data folder and
the job loads it from there, so the job's params are plain JSON and the store alone can show or resume
it after a reload or a restart. The pruning steps go into the experiment's config, so a new session
opened on the job's URL can rebuild the same pruned model next to the fine-tuned one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from torch import nn

from sentinel.errors import JobError
from sentinel.files import prepare_run_folder
from sentinel.jobs import JobManager, ProgressEvent
from sentinel.models import BUNDLED_MODEL_DIR, load_model, save_model
from sentinel.store import FINISHED_STATES, JobRecord, Store, sentinel_home
from sentinel.ui.history import curves_frame
from sentinel.ui.session import PruneStep, WorkingModel

if TYPE_CHECKING:   # sentinel.training imports transformers' Trainer (seconds): only the job start needs it
    from sentinel.training.config import FineTuneConfig

logger = logging.getLogger(__name__)

DASHBOARD_RUNS = "dashboard"
ENDED_STATES = (*FINISHED_STATES, "interrupted")


@dataclass
class FineTuneRequest:
    """What the Fine-tune page asks for; everything else is FineTuneConfig's defaults."""

    steps: int = 60
    learning_rate: float = 1e-4
    distill: bool = False
    batch_size: int = 8
    block_size: int = 128

    def config(self, device: str) -> FineTuneConfig:
        """The job's FineTuneConfig: evaluation five times per run, a checkpoint every fifth of it."""
        from sentinel.training.config import FineTuneConfig

        every = max(1, self.steps // 5)
        config = FineTuneConfig(max_steps=self.steps, learning_rate=self.learning_rate, distill=self.distill,
                                batch_size=self.batch_size, block_size=self.block_size, eval_every=every,
                                eval_max_tokens=max(4096, self.block_size), checkpoint_every=every, device=device)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FineTuneRequest:
        return cls(**data)


def pruning_summary(working: WorkingModel) -> dict[str, Any]:
    """How the session's model was pruned, for the experiment's config (and the level chart)."""
    strategies = {step.strategy or "selection" for step in working.steps}
    return {
        "strategy": strategies.pop() if len(strategies) == 1 else ("none" if not strategies else "mixed"),
        "pruning_ratio": round(working.pruned_fraction(), 4),
        "dashboard_steps": working.history(),
    }


def start_finetune(jobs: JobManager, store: Store, working: WorkingModel, request: FineTuneRequest,
                   device: str = "auto") -> str:
    """Save the session's model, record an experiment and queue the fine-tune; returns the job id."""
    from sentinel.training.job import FineTuneJob

    config = request.config(device)
    base_source = working.base.source
    experiment = store.create_experiment(
        f"Dashboard fine-tune of {Path(base_source).name}",
        {**pruning_summary(working), "steps": request.steps, "learning_rate": request.learning_rate,
         "distill": request.distill, "batch_size": request.batch_size, "block_size": request.block_size,
         "base_model": base_source},
        kind="finetune", model=base_source,
    )
    out = prepare_run_folder(sentinel_home() / DASHBOARD_RUNS / experiment)
    start = save_model(working.model, working.tokenizer, out / "start", note={"dashboard_steps": working.history()})
    for number, step in enumerate(working.steps, start=1):
        store.record_pruned_heads(experiment, step.heads, step.mode, stage=f"dashboard step {number}")
    job = FineTuneJob(out=str(out), config=config, model=str(start),
                      teacher=str(base_source) if request.distill else None)
    job_id = jobs.submit("finetune", job.to_dict(), device=device, experiment_id=experiment)
    logger.info("Queued fine-tune job %s (experiment %s) for %s", job_id, experiment, base_source)
    return job_id


@dataclass
class JobView:
    """A job as the Fine-tune page shows it: state, latest progress and the curves so far."""

    job: JobRecord
    progress: ProgressEvent
    curves: pd.DataFrame

    @property
    def ended(self) -> bool:
        return self.job.state in ENDED_STATES

    @property
    def fraction(self) -> float:
        total = self.progress.total_steps or self.job.params.get("config", {}).get("max_steps") or 0
        return min(1.0, self.progress.step / total) if total else 0.0

    def latest(self, name: str) -> float | None:
        """The last logged value of a curve (the latest progress event may not carry every metric)."""
        if name not in self.curves.columns:
            return None
        values = self.curves[name].dropna()
        return float(values.iloc[-1]) if len(values) else None

    @property
    def model_path(self) -> str | None:
        """The fine-tuned model folder (succeeded jobs only)."""
        return (self.job.result or {}).get("model") if self.job.state == "succeeded" else None


def job_view(store: Store, job_id: str) -> JobView:
    """Read a job and its experiment's curves from the store (works for jobs of any process)."""
    job = store.get_job(job_id)
    curves = store.get_curves(job.experiment_id) if job.experiment_id else {}
    progress = ProgressEvent.from_dict(job.progress) if job.progress else ProgressEvent(step=0)
    return JobView(job, progress, curves_frame(curves))


def dashboard_steps(store: Store, job: JobRecord) -> list[PruneStep]:
    """The pruning steps the job's model was made with (from its experiment's config)."""
    if job.experiment_id is None:
        return []
    config = store.get_experiment(job.experiment_id).config
    return [PruneStep.from_dict(step) for step in config.get("dashboard_steps", [])]


def base_source_of(store: Store, job: JobRecord) -> str | None:
    """The base model the job's session had loaded (None when it was the bundled model)."""
    if job.experiment_id is None:
        raise JobError(f"Job {job.id} has no experiment record; it was not started from the dashboard.")
    source = store.get_experiment(job.experiment_id).config.get("base_model")
    return None if source is None or Path(source) == BUNDLED_MODEL_DIR else source


def load_tuned(view: JobView, device: str = "auto") -> nn.Module:
    """The fine-tuned model of a succeeded job, loaded from the folder the job saved."""
    if view.model_path is None:
        raise JobError(f"Job {view.job.id} is {view.job.state}; only a finished job has a fine-tuned model.")
    return load_model(view.model_path, device=device).model
