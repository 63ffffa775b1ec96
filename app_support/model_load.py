"""Model page glue: loading another model never throws the session's work away unasked. With pruning steps or an
adopted fine-tune, the work is first kept as a run in the experiment store (Experiments lists it), then the page
asks before discarding it from the session."""

from __future__ import annotations

import streamlit as st

from app_support.state import base_model_for, measured_so_far, notify, open_model, report_errors, shared_store
from sentinel.ui.choices import ModelChoice
from sentinel.ui.kept_sessions import PendingLoad, SessionWork, keep_session, model_name, session_work
from sentinel.ui.state import DashboardState, snapshot_of

KEPT = "kept-session"          # state.caches: (SessionWork, run id) of the run this very work was kept as


def current_work(state: DashboardState) -> SessionWork | None:
    """The session's steps and adopted fine-tune as they are now (None: nothing to lose)."""
    snapshot = snapshot_of(state)
    return session_work(state.working, snapshot.adopted if snapshot is not None else None)


def load_or_ask(state: DashboardState, choice: ModelChoice) -> None:
    """Load `choice` now when the session has nothing to lose; else keep the work as a run (once for the same
    work) and leave the load waiting for `confirm_load`'s answer. The model is loaded into the shared cache first,
    so one that cannot be loaded fails here, and the confirmed load is quick."""
    base_model_for(choice)        # a model that cannot be loaded says so now, before anything is asked or kept
    work = current_work(state)
    if work is None:
        open_model(state, choice)
        st.toast("Model loaded", icon=":material/check_circle:")
        return
    state.pending_load = PendingLoad(choice, work, keep_work(state, work))


def keep_work(state: DashboardState, work: SessionWork | None = None) -> str | None:
    """Keep the session's work as a run (once for the same work); its run id, or None when there is nothing to
    lose. Everything that replaces the session's model calls this first."""
    work = work if work is not None else current_work(state)
    if work is None:
        return None
    kept = state.caches.get(KEPT)
    if kept is None or kept[0] != work:
        choice_now = state.choice or ModelChoice()
        pruned, tuned = measured_so_far(state, state.working)
        run = keep_session(shared_store(), state.working, work.adopted, choice_now.device, choice_now.dtype,
                           pruned, tuned)
        state.caches[KEPT] = kept = (work, run)
    return kept[1]


def confirm_load(state: DashboardState) -> None:
    """While a load waits: say what the session holds and where it was kept, and ask to discard it or keep working.
    The question lapses when the work changed since (another step): Load asks again, keeping that work too."""
    pending = state.pending_load
    if pending is None:
        return
    if current_work(state) != pending.work:
        state.pending_load = None
        return
    name = model_name(pending.choice)
    st.warning(f"Your session has {pending.work.describe()}. It was saved as run {pending.run} (listed on the "
               f"Experiments page), so nothing is lost. Loading {name} discards that work from this session; "
               "nothing is discarded until you confirm.", icon=":material/warning:")
    cols = st.columns(2)
    if cols[0].button(f"Discard current work and load {name}", key="model_load_confirm", type="primary",
                      icon=":material/delete_sweep:"):
        with st.spinner(f"Loading {name}…"), report_errors("loading the model") as failed:
            open_model(state, pending.choice)
        if not failed:
            notify(state, f"Model loaded; your previous work is run {pending.run} on Experiments.")
            st.rerun()
    if cols[1].button("Keep working on the current model", key="model_load_cancel", icon=":material/undo:"):
        state.pending_load = None
        st.rerun()
