"""Fine-tuning from the dashboard: hand the session's model to a background job and read the job back.

The session's model (with its masks and removals) is saved with `save_model` under the data folder and
the job loads it from there, so the job's params are plain JSON and the store alone can show or resume
it after a reload or a restart. The pruning steps go into the experiment's config, so a new session
opened on the job's URL can rebuild the same pruned model next to the fine-tuned one.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from torch import nn

from sentinel.errors import DataError, JobError
from sentinel.evaluation.size import parameter_count
from sentinel.files import prepare_run_folder, write_file_atomically
from sentinel.jobs import JobContext, JobManager, ProgressEvent
from sentinel.models import BUNDLED_MODEL_DIR, load_model, save_model
from sentinel.store import FINISHED_STATES, JobRecord, Store, sentinel_home
from sentinel.ui.history import curves_frame, finetune_run_name, readable
from sentinel.data import OWN_TRAIN_FILE, OWN_VALIDATION_FILE, finetune_text_sources, load_texts, own_text_owner
from sentinel.ui.protocol import EVAL_PROTOCOL, describe_for, protocol_perplexity
from sentinel.ui.session import PruneStep, WorkingModel
from sentinel.workflows.summary import ci_entry

if TYPE_CHECKING:   # sentinel.training imports transformers' Trainer (seconds): only the job start needs it
    from sentinel.training.config import FineTuneConfig

logger = logging.getLogger(__name__)

DASHBOARD_RUNS = "dashboard"
DASHBOARD_FINETUNE = "dashboard-finetune"      # the job kind: "finetune" that also keeps each checkpoint
CHECKPOINTS = "checkpoints"
ENDED_STATES = (*FINISHED_STATES, "interrupted")
FINETUNE_TOLERANCE = 0.005     # moving the protocol perplexity by less than 0.5% is "no measurable change"
Outcome = Literal["improved", "unchanged", "worse"]
TrainText = Literal["own", "bundled", "uploaded"]
UPLOADED_TRAIN = "train-text"     # an uploaded training text is kept in the run folder under this name + its suffix


@dataclass
class FineTuneRequest:
    """What the Fine-tune page asks for; everything else is FineTuneConfig's defaults."""

    steps: int = 60
    learning_rate: float = 1e-4
    distill: bool = False
    batch_size: int = 8
    block_size: int = 128
    train_text: TrainText = "own"     # the model's own train split where it has one, or the bundled corpus

    def config(self, device: str) -> FineTuneConfig:
        """The job's FineTuneConfig: evaluation five times per run, a checkpoint every fifth of it."""
        from sentinel.training.config import FineTuneConfig

        every = max(1, self.steps // 5)
        # validation on the protocol's first tokens of the bundled validation text: in blocks of 128 (the
        # default) the curve's numbers are exactly the protocol's
        config = FineTuneConfig(max_steps=self.steps, learning_rate=self.learning_rate, distill=self.distill,
                                batch_size=self.batch_size, block_size=self.block_size, eval_every=every,
                                eval_max_tokens=max(EVAL_PROTOCOL.tokens, self.block_size), checkpoint_every=every,
                                device=device)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FineTuneRequest:
        return cls(**data)


def pruning_summary(working: WorkingModel) -> dict[str, Any]:
    """How the session's model was pruned, for the experiment's config (and the level charts): the strategy, the
    share of heads pruned, the parameters of the base and of the pruned model (the share of parameters removed,
    whatever kinds of units were), and the steps."""
    strategies = {step.strategy or "selection" for step in working.steps}
    return {
        "strategy": strategies.pop() if len(strategies) == 1 else ("none" if not strategies else "mixed"),
        "pruning_ratio": round(working.pruned_fraction(), 4),
        "params_before": parameter_count(working.base.model), "params_after": parameter_count(working.model),
        "dashboard_steps": working.history(),
    }


def start_finetune(jobs: JobManager, store: Store, working: WorkingModel, request: FineTuneRequest,
                   device: str = "auto", upload: tuple[str, bytes] | None = None,
                   baseline: float | None = None) -> str:
    """Save the session's model, record an experiment and queue the fine-tune; returns the job id. `upload`
    (file name, bytes) is the training text when `request.train_text` is "uploaded"; it is checked before
    anything is written. `baseline` is the base model's perplexity on the app's protocol where the page has it
    (Experiments draws it as the reference line)."""
    from sentinel.training.job import FineTuneJob

    config = request.config(device)
    if (request.train_text == "uploaded") != (upload is not None):
        raise DataError("Choose a training text file to upload, or another training text."
                        if upload is None else "A file was given but the training text is not 'uploaded'.")
    if upload is not None:
        load_texts(data=upload[1], filename=upload[0])    # empty, binary, too large or column-less: refused now
    base_source = working.base.source
    summary = pruning_summary(working)
    experiment = store.create_experiment(
        finetune_run_name(summary["dashboard_steps"], request.steps, request.distill),
        {**summary, "steps": request.steps, "learning_rate": request.learning_rate,
         "distill": request.distill, "batch_size": request.batch_size, "block_size": request.block_size,
         "base_model": base_source, **({} if baseline is None else {"baseline_perplexity": baseline})},
        kind="finetune", model=base_source,
    )
    out = prepare_run_folder(sentinel_home() / DASHBOARD_RUNS / experiment)
    start = save_model(working.model, working.tokenizer, out / "start", note={"dashboard_steps": working.history()})
    # the base's own splits travel with the copy: train on its train split and validate on its held-out one
    text, validation = finetune_text_sources(start)
    if request.train_text == "bundled":
        text = None
    elif upload is not None:
        kept = out / (UPLOADED_TRAIN + (Path(upload[0]).suffix.lower() or ".txt"))
        write_file_atomically(kept, upload[1])
        text, validation = str(kept), None         # validated on its own last tenth, as `sentinel finetune --text`
    for number, step in enumerate(working.steps, start=1):
        store.record_pruned_heads(experiment, step.heads, step.mode, stage=f"dashboard step {number}")
    job = FineTuneJob(out=str(out), config=config, model=str(start),
                      teacher=str(base_source) if request.distill else None,
                      text=text, validation_text=validation)
    job_id = jobs.submit(DASHBOARD_FINETUNE, job.to_dict(), device=device, experiment_id=experiment)
    logger.info("Queued fine-tune job %s (experiment %s) for %s", job_id, experiment, base_source)
    return job_id


@dataclass(frozen=True)
class FineTuneTexts:
    """What a dashboard fine-tune trains and validates on, named for the page."""

    train: str
    validation: str

    def sentence(self) -> str:
        """'Trains on … and measures perplexity on … five times during the run.'"""
        return f"Trains on {self.train} and measures perplexity on {self.validation} five times during the run."


def finetune_texts(text: str | None, validation_text: str | None) -> FineTuneTexts:
    """Name a fine-tune job's `text` and `validation_text` params as load_finetune_data reads them: None trains on
    the bundled model's train split; a validation file is a model folder's own split, None the bundled one."""
    bundled = BUNDLED_MODEL_DIR.name
    if text is None:
        train = f"the bundled {bundled} corpus (its train split)"
    elif Path(text).parts[-2:] == OWN_TRAIN_FILE.parts:
        train = f"{own_text_owner(Path(text).parents[len(OWN_TRAIN_FILE.parts) - 1])}'s own train split"
    elif Path(text).stem == UPLOADED_TRAIN:
        train = "your uploaded text"
    else:
        train = Path(text).name
    if validation_text is not None:
        path = Path(validation_text)
        folder = path.parents[len(OWN_VALIDATION_FILE.parts) - 1]
        validation = (f"{own_text_owner(folder)}'s own validation split" if path.parts[-2:] == OWN_VALIDATION_FILE.parts
                      else path.name)
    elif text is None:
        validation = f"the bundled {bundled} corpus's validation split"
    else:
        validation = f"the last tenth of {train}"
    return FineTuneTexts(train, validation)


def planned_texts(working: WorkingModel, train_text: TrainText = "own") -> FineTuneTexts:
    """What start_finetune's job will train and validate on for the session's model (before it is started)."""
    # save_model carries the base folder's splits into the job's start copy
    text, validation = finetune_text_sources(getattr(working.model.config, "name_or_path", None) or None)
    if train_text == "bundled":
        text = None
    elif train_text == "uploaded":
        text, validation = UPLOADED_TRAIN + ".txt", None
    return finetune_texts(text, validation)


def has_own_training_text(working: WorkingModel) -> bool:
    """Whether the session's model came from a folder with its own train split (the page's default text)."""
    return finetune_text_sources(getattr(working.model.config, "name_or_path", None) or None)[0] is not None


def job_texts(job: JobRecord) -> FineTuneTexts:
    """What a started job trains and validates on, from its own params."""
    return finetune_texts(job.params.get("text"), job.params.get("validation_text"))


@dataclass(frozen=True)
class _Point:
    step: int
    value: float


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

    def curve_points(self, name: str) -> list[Any]:
        """The (step, value) points of one curve, as MetricPoint-like records."""
        if name not in self.curves.columns:
            return []
        return [_Point(int(row.step), float(getattr(row, name))) for row in self.curves.itertuples()
                if not math.isnan(getattr(row, name))]

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


@dataclass(frozen=True)
class QueuePlace:
    """Where a queued job stands: its place (1 = next to start), and the running job's time left if known."""

    place: int
    ahead_running: int
    start_in_s: float | None

    def describe(self) -> str:
        """'you are #2 in the queue; estimated start in about 40 s' (no estimate when it cannot be made)."""
        text = f"#{self.place} in the queue"
        if self.start_in_s is not None:
            text += f"; estimated start in about {self.start_in_s:.0f} s"
        elif self.ahead_running or self.place > 1:
            text += "; no start estimate yet (the job ahead has not reported its pace)"
        return text


def queue_place(store: Store, job: JobRecord) -> QueuePlace:
    """The queued `job`'s place among jobs on the same device: those running and those queued before it.

    The estimate is the running jobs' own time left, given only when no other queued job is ahead (their
    durations are not known before they start).
    """
    same = [j for j in store.list_jobs(("queued", "running")) if j.device == job.device and j.id != job.id]
    running = [j for j in same if j.state == "running"]
    ahead = [j for j in same if j.state == "queued" and (j.created, j.id) < (job.created, job.id)]
    etas = [ProgressEvent.from_dict(j.progress).eta_seconds if j.progress else None for j in running]
    start = max(etas) if etas and all(e is not None for e in etas) and not ahead else None
    return QueuePlace(len(ahead) + 1, len(running), start)


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


def load_tuned(view: JobView, device: str = "auto", path: str | None = None) -> nn.Module:
    """The fine-tuned model of a succeeded job (or one of its kept checkpoints, `path`), loaded from disk."""
    if view.model_path is None:
        raise JobError(f"Job {view.job.id} is {view.job.state}; only a finished job has a fine-tuned model.")
    return load_model(path or view.model_path, device=device).model


def run_dashboard_finetune(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job kind "dashboard-finetune": the "finetune" job, keeping a copy of every checkpoint under
    <out>/checkpoints/step-N so the page can offer the best one; after the run only the best is kept."""
    from sentinel.training.job import run_finetune_job

    out = Path(params["out"]).expanduser()
    kept = out / CHECKPOINTS

    class KeepingContext(JobContext):
        def checkpoint(self, path: str | Path, step: int) -> None:
            super().checkpoint(path, step)
            target = kept / f"step-{step}"
            partial = kept / f".step-{step}.partial"
            shutil.rmtree(partial, ignore_errors=True)       # a copy we started and never finished
            shutil.copytree(path, partial)
            shutil.rmtree(target, ignore_errors=True)        # our own earlier copy of this step (a resumed run)
            partial.rename(target)

    keeping = KeepingContext(**{f.name: getattr(ctx, f.name) for f in fields(ctx)})
    summary = run_finetune_job(params, keeping)
    measured: dict[str, Any] = {}
    if ctx.experiment_id is not None and kept.is_dir():
        best = best_step(ctx.store.get_curves(ctx.experiment_id, ["val_perplexity"]).get("val_perplexity", []),
                         summary.get("perplexity_before"))
        measured.update(best_step=best[0], best_perplexity=best[1])
        for folder in kept.iterdir():
            if folder.name != f"step-{best[0]}":
                shutil.rmtree(folder)
    if summary.get("model") and not ctx.cancelled:
        measured.update(protocol_before_after(params["model"], summary["model"], ctx.device))
    if measured:
        summary.update(measured)
        if ctx.experiment_id is not None:
            ctx.store.update_experiment(ctx.experiment_id, summary=measured)
    return summary


def protocol_before_after(start: str, tuned: str, device: str) -> dict[str, Any]:
    """The app's protocol perplexity of the model a fine-tune started from and of its result, measured inside the job
    so the Fine-tune verdict and Experiments read the same numbers whether or not anyone opened the finished job."""
    loaded = load_model(start, device=device)
    before = protocol_perplexity(loaded.model, loaded.tokenizer)
    after = protocol_perplexity(load_model(tuned, device=device).model, loaded.tokenizer)
    logger.info("Fine-tune judged on the app's protocol: %.3f -> %.3f", before.perplexity, after.perplexity)
    return {"protocol_perplexity_before": before.perplexity, "protocol_perplexity_after": after.perplexity,
            **ci_entry("protocol_perplexity_before", before), **ci_entry("protocol_perplexity_after", after),
            "protocol_tokens": after.tokens_evaluated, "protocol": describe_for(loaded.model, after.tokens_evaluated)}


def protocol_numbers(summary: Mapping[str, Any]) -> tuple[float, float, int] | None:
    """(before, after, scored tokens) on the app's protocol from a dashboard fine-tune's summary; None for runs
    recorded before the job measured them (those numbers are then measured again, never taken from the trainer)."""
    values = [summary.get(k) for k in ("protocol_perplexity_before", "protocol_perplexity_after", "protocol_tokens")]
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
        return None
    return float(values[0]), float(values[1]), int(values[2])


def best_step(points: list[Any], before: float | None) -> tuple[int, float]:
    """(step, validation perplexity) of the lowest point of a run, step 0 being the model it started from."""
    candidates = [(0, float(before))] if before is not None and math.isfinite(before) else []
    candidates += [(p.step, p.value) for p in points if p.value is not None and math.isfinite(p.value)]
    if not candidates:
        raise JobError("The run recorded no validation perplexity, so there is no best checkpoint to offer.")
    return min(candidates, key=lambda item: (item[1], -item[0]))


@dataclass(frozen=True)
class FineTuneVerdict:
    """A finished fine-tune judged under the app's protocol: before and after, and the best point of the run."""

    steps: int
    before: float
    after: float
    tokens: int
    best_step: int
    best_value: float
    last_value: float              # the validation curve's last point (the run's own windows)
    best_path: str | None          # the kept checkpoint of the best step (None: step 0 or the last step)
    described: str | None = None   # the protocol sentence (which text, how many tokens); None: the bundled text's

    @property
    def change(self) -> float:
        """The relative change of the protocol perplexity, (after − before) / before (negative: better)."""
        return (self.after - self.before) / self.before

    @property
    def outcome(self) -> Outcome:
        """'improved', 'unchanged' (|change| under FINETUNE_TOLERANCE) or 'worse'."""
        if abs(self.change) < FINETUNE_TOLERANCE:
            return "unchanged"
        return "improved" if self.change < 0 else "worse"

    @property
    def improved(self) -> bool:
        return self.outcome == "improved"

    @property
    def last_is_best(self) -> bool:
        return self.best_step == self.steps or self.best_value >= self.last_value

    def headline(self) -> str:
        """One sentence with the numbers (4 significant digits), e.g. 'perplexity got worse, 120.9 → 1,811 (+1398.1%)'
        or 'no measurable change in perplexity, 1.523 → 1.523 (−0.0%, under the 0.5% tolerance)'."""
        numbers = f"{readable(self.before)} → {readable(self.after)} ({self.change:+.1%}"
        if self.outcome == "unchanged":
            said = f"no measurable change in perplexity, {numbers}, under the {FINETUNE_TOLERANCE:.1%} tolerance)"
        else:
            said = f"perplexity {'improved' if self.improved else 'got worse'}, {numbers})"
        return f"Fine-tuning for {self.steps} steps: {said} ({self.described or EVAL_PROTOCOL.describe(self.tokens)})."


def judge_finetune(view: JobView, before: float, after: float, tokens: int,
                   described: str | None = None) -> FineTuneVerdict:
    """Compare the protocol perplexity before and after and find the run's best point (validation curve)."""
    points = view.curve_points("val_perplexity")
    recorded = view.job.result or {}
    if "best_step" in recorded:          # the job chose it on the run's own curve and kept only that checkpoint
        step, value = int(recorded["best_step"]), float(recorded["best_perplexity"])
    else:                                # a run still going, or one recorded before jobs chose their best step
        step, value = best_step(points, before)
    path = None
    if 0 < step < view.progress.step:
        folder = Path(view.job.params.get("out", "")) / CHECKPOINTS / f"step-{step}"
        path = str(folder) if (folder / "config.json").is_file() else None
    steps = int((view.job.result or {}).get("steps") or view.progress.step)
    last = points[-1].value if points else after
    return FineTuneVerdict(steps, before, after, tokens, step, value, last, path, described)
