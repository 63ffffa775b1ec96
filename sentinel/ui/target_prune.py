"""Prune by target off the page: with recovery, the removal and re-fit run as the background job kind
"target-prune", which saves the recovered weights (sentinel.ui.recovered) for the page to adopt and every replay to
load; with or without recovery, each target prune is recorded in the experiment store in the summary format
`sentinel compress` writes (predicted and measured parameters and FLOPs, perplexity before and after).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from torch import nn

from sentinel.errors import InvalidPruningPlan
from sentinel.evaluation.size import parameter_count
from sentinel.jobs import JobContext, JobManager, ProgressEvent
from sentinel.models import load_model
from sentinel.models.flops import forward_flops
from sentinel.pruning.budget import BudgetResult, prunable_params
from sentinel.pruning.plan import PruningPlan
from sentinel.pruning.recovery import RecoveryResult
from sentinel.store import Store, StoreError
from sentinel.ui.analysis import RecoveryFigures
from sentinel.ui.budget import BudgetSettings
from sentinel.ui.history import target_run_name
from sentinel.ui.protocol import EVAL_PROTOCOL, protocol_perplexity
from sentinel.ui.recovered import save_recovered, weights_path
from sentinel.ui.session import DASHBOARD_CALIBRATION, PruneStep, WorkingModel
from sentinel.workflows.summary import RunSummary

logger = logging.getLogger(__name__)

JOB_KIND = "target-prune"
EXPERIMENT_KIND = "dashboard-compress"     # a target prune from the dashboard (the CLI's runs are "compress")


def experiment_config(working: WorkingModel, settings: BudgetSettings, prior: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's settings: the target, unit kinds, allocation, recovery (with its calibration) and where it started."""
    config = {**asdict(settings), "units": list(settings.units), "target": settings.target(),
              "base_model": working.base.source, "dashboard_steps": prior, "protocol": EVAL_PROTOCOL.describe()}
    if settings.recovery != "none":
        config["calibration"] = DASHBOARD_CALIBRATION.to_dict()
    return config


def run_summary(model: nn.Module, settings: BudgetSettings, predicted: dict[str, Any], before: float, removed: float,
                after: float, recovery: RecoveryResult | None, step: PruneStep,
                intervals: Mapping[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """The summary `sentinel compress` writes (canonical RunSummary numbers, then its own detail), for this prune.

    `predicted` is `BudgetResult.to_dict()`; perplexities follow the app's protocol: `before` the step, `removed`
    right after removal, `after` once recovered (= removed without recovery); `intervals` their 95% intervals by
    RunSummary name, where measured.
    """
    summary = RunSummary(status="completed", baseline_perplexity=before, perplexity_pruned=removed,
                         perplexity_after=after, params_before=predicted["total_params_before"],
                         params_after=parameter_count(model), intervals=dict(intervals or {}))
    perplexity = {"original": before, "pruned": removed}
    if recovery is not None:
        perplexity["recovered"] = after
    summary.update(
        target=settings.target(), units=list(settings.units), allocation=settings.allocation,
        budget={k: v for k, v in predicted.items() if k != "plan"}, plan=predicted["plan"],
        prunable_params_before=predicted["prunable_params_before"], prunable_params_after=prunable_params(model),
        body_flops_before=predicted["flops_before"],
        body_flops_after=forward_flops(model, predicted["seq_len"], lm_head=False),
        predicted_params_after=predicted["total_params_after"], predicted_body_flops_after=predicted["flops_after"],
        perplexity=perplexity, recovery=None if recovery is None else recovery.to_dict(), removed=step.describe(),
        protocol=EVAL_PROTOCOL.describe())
    return summary.to_dict()


def record_target_prune(store: Store, working: WorkingModel, settings: BudgetSettings, predicted: BudgetResult,
                        before: float, after: float) -> str:
    """Record a target prune applied on the page (no recovery: removed = after) as a finished experiment."""
    step = working.steps[-1]
    config = experiment_config(working, settings, working.history()[:-1])
    experiment = store.create_experiment(target_run_name(settings), config, kind=EXPERIMENT_KIND,
                                         model=working.base.source, status="running")
    summary = run_summary(working.model, settings, predicted.to_dict(), before, after, after, working.last_recovery,
                          step)
    store.update_experiment(experiment, status="completed", summary=summary)
    return experiment


def start_target_prune(jobs: JobManager, store: Store, working: WorkingModel, settings: BudgetSettings,
                       predicted: BudgetResult, source: str | None, device: str = "auto", dtype: str = "auto") -> str:
    """Record the run and queue the removal + recovery of exactly the predicted plan; returns the job id.

    `source`, `device` and `dtype` are the session's model choice: the job loads the same base model and replays the
    session's steps (recovered ones from their saved weights) before it removes and re-fits.
    """
    if settings.recovery == "none":
        raise InvalidPruningPlan("Without recovery a target prune is quick; apply it on the page instead.")
    if predicted.plan.is_empty():
        raise InvalidPruningPlan("This target removes nothing: raise the share or allow more unit kinds.")
    prior = working.history()
    experiment = store.create_experiment(target_run_name(settings), experiment_config(working, settings, prior),
                                         kind=EXPERIMENT_KIND, model=working.base.source, status="running")
    params = {"source": source, "dtype": dtype, "steps": prior, "settings": {**asdict(settings),
                                                                            "units": list(settings.units)},
              "predicted": predicted.to_dict()}
    return jobs.submit(JOB_KIND, params, device=device, experiment_id=experiment)


def run_target_prune_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "target-prune": replay, remove, recover (cancellable per projection),
    measure, save the weights under the job's id; the result holds the step the page adopts."""
    settings = BudgetSettings(**{**params["settings"], "units": tuple(params["settings"]["units"])})
    predicted = params["predicted"]
    plan = PruningPlan.from_dict(predicted["plan"])
    extra = 4                              # replay, measure before, measure removed ... measure after, save

    def tell(step: int, total: int | None, message: str) -> None:
        ctx.report(ProgressEvent(step=step, total_steps=total, message=message), record_metrics=False)

    tell(0, None, "loading the model and replaying your earlier steps")
    dtype = params.get("dtype") or "auto"
    loaded = load_model(params.get("source"), device=ctx.device, dtype=None if dtype == "auto" else dtype)
    working = WorkingModel(loaded)
    working.replay([PruneStep.from_dict(step) for step in params["steps"]])
    ctx.raise_if_cancelled()
    tell(1, None, "measuring your model before this step")
    measured = {"baseline_perplexity": protocol_perplexity(working.model, working.tokenizer)}
    before = measured["baseline_perplexity"].perplexity
    removed: dict[str, float] = {}

    def after_removal(model: nn.Module) -> None:
        ctx.raise_if_cancelled()
        tell(2, None, "units removed; measuring before recovery")
        measured["perplexity_pruned"] = protocol_perplexity(model, working.tokenizer)
        removed["perplexity"] = measured["perplexity_pruned"].perplexity

    def progress(done: int, total: int) -> None:
        ctx.raise_if_cancelled()       # stops between two projections
        tell(2 + done, total + extra, f"{settings.recovery} recovery: re-fitted {done} of {total} projections")

    step = working.apply(plan, "remove", settings.label(), recovery=settings.recovery, progress=progress,
                         after_removal=after_removal)
    ctx.raise_if_cancelled()
    fits = len(working.last_recovery.fits) if working.last_recovery else 0
    tell(2 + fits, fits + extra, "measuring the recovered model")
    measured["perplexity_after"] = protocol_perplexity(working.model, working.tokenizer)
    after = measured["perplexity_after"].perplexity
    step.job, step.fingerprint = ctx.job_id, working.fingerprint(step, working.steps[:-1])
    ctx.raise_if_cancelled()
    tell(3 + fits, fits + extra, "saving the recovered weights")
    save_recovered(working.model, weights_path(ctx.job_id), step.fingerprint)
    intervals = {name: (r.ci_low, r.ci_high) for name, r in measured.items()
                 if r.ci_low is not None and r.ci_high is not None}
    summary = run_summary(working.model, settings, predicted, before, removed["perplexity"], after,
                          working.last_recovery, step, intervals)
    if ctx.experiment_id is not None:
        ctx.store.update_experiment(ctx.experiment_id, status="completed", summary={**summary, "job": ctx.job_id})
    tell(fits + extra, fits + extra, "done")
    return {"step": step.to_dict(), "recovery": working.last_recovery.to_dict() if working.last_recovery else None,
            "perplexity": {"before": before, "removed": removed["perplexity"], "after": after}}


def recovery_figures(store: Store, working: WorkingModel) -> list[RecoveryFigures]:
    """For each of the session's steps whose recovery a target-prune job fitted: perplexity before the step, right
    after removal and after recovery, as that job measured them with the app's protocol (read from the job's result,
    so they survive a reload). A step whose job record is gone is left out, with a warning in the log."""
    found = []
    for index, step in enumerate(working.steps):
        if not step.saved:
            continue
        try:
            job = store.get_job(step.job)
        except StoreError as err:
            logger.warning("No perplexities for recovered step %d: %s", index + 1, err)
            continue
        measured = (job.result or {}).get("perplexity") if job.kind == JOB_KIND else None
        if measured is not None:
            found.append(RecoveryFigures(index + 1, step.recovery, measured["before"], measured["removed"],
                                         measured["after"]))
    return found
