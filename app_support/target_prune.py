"""Prune page glue for target prunes: apply one without recovery on the page, send one with recovery to the
background job, show that job's progress with a cancel button, and adopt its result as a step when it ends."""

from __future__ import annotations

import streamlit as st

from app_support.state import current_figures, keep_selection, notify, report_errors, shared_jobs, shared_store
from app_support.progress import job_progress
from sentinel.pruning.budget import BudgetResult
from sentinel.ui.budget import BudgetSettings, apply_budget
from sentinel.ui.format import job_failure
from sentinel.ui.session import PruneStep, WorkingModel, recovery_result
from sentinel.ui.state import DashboardState, ModelChoice
from sentinel.ui.target_prune import record_target_prune, start_target_prune


def recovery_pending(state: DashboardState) -> bool:
    """Whether this session's target-prune job is still queued or running."""
    if state.recover_job_id is None:
        return False
    return shared_store().get_job(state.recover_job_id).state in ("queued", "running")


APPLIED_TARGET = "budget-applied"     # state.caches: (working id, version after, BudgetSettings, BudgetResult)
PENDING_TARGET = "budget-pending"     # state.caches: (job id, BudgetSettings, BudgetResult) of the queued job

def prune_to_target(state: DashboardState, working: WorkingModel, budget: BudgetSettings,
                    predicted: BudgetResult) -> PruneStep | None:
    """Without recovery: remove the predicted plan now and record the run. With recovery: queue the job (the page
    adopts its result when it ends) and return None."""
    choice = state.choice or ModelChoice()
    if budget.recovery != "none":
        state.recover_job_id = start_target_prune(shared_jobs(), shared_store(), working, budget, predicted,
                                                  choice.source, choice.device, choice.dtype)
        state.caches[PENDING_TARGET] = (state.recover_job_id, budget, predicted)
        notify(state, f"Removing and re-fitting in the background ({budget.recovery}); the page stays usable and "
                      "your model changes when the job ends.")
        return None
    before = current_figures(state, working)
    with st.spinner("Removing the units…"):
        step = apply_budget(working, predicted, budget)       # exactly the predicted plan
    after = current_figures(state, working)
    if before is not None and after is not None:
        with report_errors("recording the run in the experiment store"):
            record_target_prune(shared_store(), working, budget, predicted, before.perplexity, after.perplexity)
    return step


def recovery_panel(state: DashboardState, working: WorkingModel) -> None:
    """Where the session's target-prune job stands: progress, adoption of its result, or why nothing was kept;
    and any note on a replay that re-fitted instead of loading saved weights."""
    for note in working.notes:
        st.warning(note, icon=":material/warning:")
    if state.recover_job_id is None:
        return
    with report_errors("reading the target prune's job") as failed:
        job = shared_store().get_job(state.recover_job_id)
    if failed:
        return
    name = shared_store().get_experiment(job.experiment_id).name if job.experiment_id else job.id
    if job.state in ("queued", "running"):
        job_progress(job.id, "Target prune with recovery", "target_prune_cancel",
                     "Stop the job; your model stays as it is and nothing of the job is kept.")
    elif job.state == "succeeded":
        with report_errors("adopting the recovered model") as failed:
            step = working.adopt(PruneStep.from_dict(job.result["step"]), recovery_result(job.result["recovery"]))
        if failed:
            st.caption(f"Job {job.id} ({name}) is kept in the experiment store; nothing changed in your model.")
            _dismiss(state)
            return
        pending = state.caches.pop(PENDING_TARGET, None)
        if pending is not None and pending[0] == job.id:      # lost on a reload: then no target-vs-speed table
            state.caches[APPLIED_TARGET] = (id(working), working.version, pending[1], pending[2])
        state.recover_job_id = None
        notify(state, f"Removed {step.describe()} ({step.how}); recovery fitted in the background by job {job.id}")
        keep_selection(state, working)
        st.rerun()
    else:
        if job.state == "cancelled":
            st.info(f"The target prune ({name}) was cancelled: nothing was kept, your model is as it was before you "
                    "pressed Prune.", icon=":material/cancel:")
        else:
            st.error(f"The target prune ({name}) {job.state}: {job_failure(job)}. Nothing was kept; your "
                     "model is as it was before you pressed Prune.", icon=":material/error:")
        _dismiss(state)


def _dismiss(state: DashboardState) -> None:
    """A button that clears the message about a job whose result was not adopted."""
    if st.button("Dismiss", key="target_prune_dismiss", icon=":material/close:"):
        state.recover_job_id = None
        st.rerun()

