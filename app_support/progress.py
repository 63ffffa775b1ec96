"""One progress bar for every background job a page starts: the job's place in the queue or its last message, a
Cancel button, and a hand-over to the whole page when the job has ended."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from app_support.state import shared_jobs, shared_store
from sentinel.jobs import ProgressEvent
from sentinel.ui.finetune import queue_place


@st.fragment(run_every=1.0)
def job_progress(job_id: str, what: str, cancel_key: str, cancel_help: str | None = None,
                 cancel_label: str = "Cancel", describe: Callable[[ProgressEvent], str] | None = None,
                 can_cancel: bool = True) -> None:
    """Redrawn every second while job `job_id` runs: "<what>: <queue place | progress message>", and Cancel.

    `describe` words a running job's progress event (default: the event's own message); `can_cancel` False for a
    job this session did not start (it is shown, but only its owner may stop it)."""
    job = shared_store().get_job(job_id)
    event = ProgressEvent.from_dict(job.progress) if job.progress else ProgressEvent(step=0)
    share = min(1.0, event.step / event.total_steps) if event.total_steps else 0.0
    if job.state == "queued":
        words = f"queued — {queue_place(shared_store(), job).describe()}"
    else:
        words = describe(event) if describe is not None else event.message
    st.progress(share, text=f"{what}: {words or 'starting'}")
    if can_cancel and st.button(cancel_label, key=cancel_key, icon=":material/cancel:", help=cancel_help):
        shared_jobs().cancel(job_id)
        st.rerun(scope="app")
    if job.state not in ("queued", "running"):
        st.rerun(scope="app")
