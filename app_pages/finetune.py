"""Fine-tune page: train the session's pruned model in the background and watch it live."""

import streamlit as st

from sentinel.ui.charts import curves_chart
from sentinel.ui.finetune import FineTuneRequest, JobView, job_view, start_finetune
from app_support.state import (adopt_finished_job, dashboard, report_errors, require_model, shared_jobs,
                               shared_store)

STATE_WORDS = {"queued": "waiting to start", "running": "running", "succeeded": "finished",
               "failed": "failed", "cancelled": "cancelled", "interrupted": "interrupted (the app stopped)"}

state = dashboard()
st.title(":material/model_training: Fine-tune")
st.caption("Training the pruned model for a while usually wins back much of the quality pruning cost. It runs "
           "in the background: keep using the other pages and come back, or bookmark this page's address.")

linked = st.query_params.get("job")
if linked and linked != state.job_id:
    state.job_id = linked
working = require_model(state)


def show(view: JobView) -> None:
    """Progress bar, numbers and curves of one job."""
    job, progress = view.job, view.progress
    total = progress.total_steps or job.params.get("config", {}).get("max_steps")
    st.progress(view.fraction, text=f"Job {job.id}: {STATE_WORDS.get(job.state, job.state)} — step "
                                    f"{progress.step} of {total}")
    cols = st.columns(4)
    loss, ppl = view.latest("loss"), view.latest("val_perplexity")
    cols[0].metric("Training loss", f"{loss:.3f}" if loss is not None else "–")
    cols[1].metric("Validation perplexity", f"{ppl:.2f}" if ppl is not None else "–")
    speed = view.latest("tokens_per_second")
    cols[2].metric("Training tokens/s", f"{speed:,.0f}" if speed else "–")
    eta = progress.eta_seconds
    cols[3].metric("Time left", f"{eta:.0f} s" if eta is not None and not view.ended else "–")
    shown = [c for c in ("loss", "val_perplexity") if c in view.curves.columns]
    titles = {"loss": "Training loss", "val_perplexity": "Validation perplexity"}
    for column, name in zip(st.columns(2), shown):
        column.altair_chart(curves_chart(view.curves, name, titles[name]), width="stretch")


@st.fragment(run_every=1.0)
def live(job_id: str) -> None:
    """Redrawn every second while the job runs; hands over to the full page once it has ended."""
    with report_errors("reading the job's progress") as failed:
        view = job_view(shared_store(), job_id)
    if failed:
        return
    show(view)
    if st.button("Cancel", key="finetune_cancel", icon=":material/stop:"):
        with report_errors("cancelling the job"):
            shared_jobs().cancel(job_id)
            st.toast("Cancelling: the job stops after its current step and keeps a checkpoint.")
    if view.ended:
        st.rerun(scope="app")


with st.form("finetune_settings"):
    cols = st.columns(3)
    steps = cols[0].number_input("Training steps", 1, 100_000, 60, key="finetune_steps")
    rate = cols[1].number_input("Learning rate", 1e-6, 1e-2, 1e-4, format="%.0e", key="finetune_lr")
    distill = cols[2].toggle("Distil from the unpruned model", False, key="finetune_distill",
                             help="Also learn to match the base model's predictions (slower: runs both models).")
    with st.expander("More settings"):
        cols = st.columns(2)
        batch = cols[0].number_input("Batch size", 1, 256, 8, key="finetune_batch")
        block = cols[1].select_slider("Tokens per example", [32, 64, 128, 256, 512], 128, key="finetune_block")
    st.caption("Trains on the bundled stdlib-docstring corpus (train split) and measures perplexity on its "
               "validation split five times during the run.")
    start = st.form_submit_button("Start fine-tuning", type="primary", icon=":material/play_arrow:")

if start:
    busy = state.job_id is not None and job_view(shared_store(), state.job_id).job.state in ("queued", "running")
    if busy:
        st.error("A fine-tune from this session is still running; cancel it or wait for it to finish.",
                 icon=":material/error:")
    else:
        with report_errors("starting the fine-tune"):
            request = FineTuneRequest(int(steps), float(rate), bool(distill), int(batch), int(block))
            device = state.choice.device if state.choice else "auto"
            state.job_id = start_finetune(shared_jobs(), shared_store(), working, request, device)
            st.query_params["job"] = state.job_id

if state.job_id is None:
    st.info("No fine-tune yet in this session. Choose the settings and press **Start fine-tuning**.")
    st.stop()

st.query_params["job"] = state.job_id
with report_errors("reading the job") as failed:
    view = job_view(shared_store(), state.job_id)
if failed:
    st.stop()
if not view.ended:
    live(state.job_id)
    st.stop()

show(view)
if view.job.state == "failed":
    st.error(f"The fine-tuning job failed: {view.job.error}", icon=":material/error:")
elif view.job.state in ("cancelled", "interrupted"):
    st.warning(f"The job was {view.job.state} at step {view.progress.step}; its last checkpoint is kept.",
               icon=":material/warning:")
    if st.button("Resume", key="finetune_resume", icon=":material/replay:"):
        with report_errors("resuming the job"):
            shared_jobs().resume(view.job.id)
            st.rerun()
else:
    with report_errors("loading the fine-tuned model"):
        adopt_finished_job(state, working, view)
    summary = view.job.result or {}
    before, after = summary.get("perplexity_before"), summary.get("perplexity_after")
    if before is not None and after is not None:
        st.success(f"Fine-tuned for {summary.get('steps')} steps: validation perplexity {before:.2f} → {after:.2f}. "
                   "The fine-tuned model is now this session's 'after' model on the Compare page.",
                   icon=":material/check_circle:")
    st.page_link("app_pages/compare.py", label="Compare base, pruned and fine-tuned text",
                 icon=":material/compare_arrows:")
if not view.curves.empty:
    st.download_button("Download the curves (CSV)", view.curves.to_csv(index=False).encode("utf-8"),
                       file_name=f"finetune-{view.job.id}.csv", mime="text/csv", key="finetune_csv")
