"""Fine-tune page: train the session's pruned model in the background and watch it live."""

import streamlit as st

from app_support.model_load import keep_work
from app_support.state import (JOB_KEY, adopt_tuned, base_figures, dashboard, job_model_note, job_verdict, notify,
                               report_errors, require_model, restore_job_session, shared_jobs, shared_store,
                               show_notices)
from sentinel.charts import curves_chart
from sentinel.data import DEFAULT_MAX_BYTES
from sentinel.models.bundled import BUNDLED_MODEL_DIR
from sentinel.ui.analysis import UPLOAD_ACCEPT_MB
from sentinel.ui.finetune import (FINETUNE_TOLERANCE, FineTuneRequest, FineTuneVerdict, JobView, has_own_training_text,
                                  job_texts, job_view, planned_texts, queue_place, start_finetune)
from sentinel.ui.format import job_failure
from sentinel.ui.history import readable
from sentinel.ui.protocol import EVAL_PROTOCOL

TRAIN_TEXTS = {"own": "The model's own train split", "bundled": f"The bundled {BUNDLED_MODEL_DIR.name} corpus",
               "uploaded": "A file I upload"}
STATE_WORDS = {"queued": "waiting to start", "running": "running", "succeeded": "finished",
               "failed": "failed", "cancelled": "cancelled", "interrupted": "interrupted (the app stopped)"}

state = dashboard()
st.title(":material/model_training: Fine-tune")
st.caption("Training the pruned model for a while usually wins back much of the quality pruning cost. It runs "
           "in the background: keep using the other pages and come back, or bookmark this page's address.")

working = require_model(state)
linked = st.query_params.get(JOB_KEY)
if linked and linked != state.job_id:
    state.job_id = linked
show_notices(state)


def show(view: JobView) -> None:
    """Progress bar, numbers and curves of one job."""
    job, progress = view.job, view.progress
    total = progress.total_steps or job.params.get("config", {}).get("max_steps")
    words = STATE_WORDS.get(job.state, job.state)
    if job.state == "queued":
        words += f" — {queue_place(shared_store(), job).describe()}"
    st.progress(view.fraction, text=f"Job {job.id}: {words} — step {progress.step} of {total}")
    cols = st.columns(4)
    loss, ppl = view.latest("loss"), view.latest("val_perplexity")
    cols[0].metric("Training loss", f"{loss:.3f}" if loss is not None else "–")
    block = job.params.get("config", {}).get("block_size", EVAL_PROTOCOL.window)
    own = job.params.get("validation_text")
    text = job_texts(job).validation
    same = not own and block == EVAL_PROTOCOL.window
    cols[1].metric("Validation perplexity", readable(ppl) if ppl is not None else "–",
                   help=f"The run's own curve: the first {EVAL_PROTOCOL.tokens:,} tokens of {text} in blocks of "
                        f"{block} tokens" + (" — exactly the app's protocol." if same else
                                             "; the judged numbers below use the app's protocol, measured "
                                             "again on the model before and after."))
    speed = view.latest("tokens_per_second")
    cols[2].metric("Training tokens/s", f"{speed:,.0f}" if speed else "–")
    eta = progress.eta_seconds
    cols[3].metric("Time left", f"{eta:.0f} s" if eta is not None and not view.ended else "–")
    shown = [c for c in ("loss", "val_perplexity") if c in view.curves.columns]
    titles = {"loss": "Training loss", "val_perplexity": "Validation perplexity"}
    log = st.session_state.get("finetune_log", False)
    for column, name in zip(st.columns(2), shown):
        column.altair_chart(curves_chart(view.curves, name, titles[name], log=log and name == "val_perplexity"),
                            width="stretch")


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
            st.toast("Cancelling: the job stops after its current step and keeps a checkpoint."
                     if view.progress.step > 0 else "Cancelling: the job has not trained yet, so nothing will be kept.")
    if view.ended:
        st.rerun(scope="app")


def adopt_buttons(view: JobView, verdict: FineTuneVerdict, adopted: str | None) -> None:
    """'Use the fine-tuned model' and 'Use the best checkpoint' (or what is adopted already)."""
    cols = st.columns(2)
    if adopted == view.model_path:
        cols[0].success("The fine-tuned model is this session's 'after' model on Compare.")
    elif cols[0].button("Use the fine-tuned model", key="finetune_adopt", type="primary" if verdict.improved
                        else "secondary", icon=":material/check:",
                        help="Make it the third column on Compare (your pruned model stays as it is)."):
        with report_errors("loading the fine-tuned model"):
            adopt_tuned(state, state.working, view)
            st.rerun()
    if verdict.best_path is not None:
        if adopted == verdict.best_path:
            cols[1].success(f"The step-{verdict.best_step} checkpoint is this session's 'after' model.")
        elif cols[1].button(f"Use the best checkpoint (step {verdict.best_step})", key="finetune_adopt_best",
                            type="primary", icon=":material/star:"):
            with report_errors("loading the best checkpoint"):
                adopt_tuned(state, state.working, view, verdict.best_path)
                st.rerun()
    elif verdict.best_step == 0 and not verdict.last_is_best:
        cols[1].caption("Best is the model you started from: keep your pruned model (nothing to adopt).")


choices = (["own"] if has_own_training_text(working) else []) + ["bundled", "uploaded"]
train_text = st.radio("Training text", choices, format_func=TRAIN_TEXTS.get, horizontal=True, key="finetune_text",
                      help="What the model learns from. Its own train split is the text it was trained on; a "
                           "different text teaches it that text's style.")
upload = None
if train_text == "uploaded":
    file = st.file_uploader(f"A .txt, .jsonl or .csv file (up to {DEFAULT_MAX_BYTES // 2**20} MB; jsonl/csv need a "
                            "'text' column)", type=["txt", "jsonl", "csv"], key="finetune_upload",
                            max_upload_size=UPLOAD_ACCEPT_MB)
    upload = (file.name, file.getvalue()) if file is not None else None

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
    st.caption(planned_texts(working, train_text).sentence())
    start = st.form_submit_button("Start fine-tuning", type="primary", icon=":material/play_arrow:")

if start:
    busy = state.job_id is not None and job_view(shared_store(), state.job_id).job.state in ("queued", "running")
    if busy:
        st.error("A fine-tune from this session is still running; cancel it or wait for it to finish.",
                 icon=":material/error:")
    else:
        with report_errors("starting the fine-tune"):
            request = FineTuneRequest(int(steps), float(rate), bool(distill), int(batch), int(block), train_text)
            device = state.choice.device if state.choice else "auto"
            base = base_figures(state, working)       # measured once per model; the reference on Experiments
            state.job_id = start_finetune(shared_jobs(), shared_store(), working, request, device, upload,
                                          baseline=base.perplexity if base is not None else None)
            st.query_params[JOB_KEY] = state.job_id

if state.job_id is None:
    st.info("No fine-tune yet in this session. Choose the settings and press **Start fine-tuning**.")
    st.stop()

st.query_params[JOB_KEY] = state.job_id
with report_errors("reading the job") as failed:
    view = job_view(shared_store(), state.job_id)
if failed:
    st.stop()
if not view.ended:
    live(state.job_id)
    st.stop()

st.toggle("Log scale for perplexity", key="finetune_log",
          help="A run that diverges reaches perplexities thousands of times larger; a log axis keeps both ends readable.")
show(view)
if view.job.state == "failed":
    st.error(f"The fine-tuning job failed: {job_failure(view.job)}", icon=":material/error:")
elif view.job.state in ("cancelled", "interrupted"):
    if view.progress.step == 0:
        st.warning(f"The job was {view.job.state} before its first training step; nothing was kept.",
                   icon=":material/warning:")
    else:
        kept = shared_store().latest_checkpoint(job_id=view.job.id)
        st.warning(f"The job was {view.job.state} at step {view.progress.step}; "
                   + (f"its checkpoint from step {kept.step} is kept." if kept else "no checkpoint was written yet, "
                      "so resuming starts again from step 0."), icon=":material/warning:")
        if st.button("Resume", key="finetune_resume", icon=":material/replay:"):
            with report_errors("resuming the job"):
                shared_jobs().resume(view.job.id)
                st.rerun()
else:
    other: str | None = None
    with report_errors("comparing the job's model with yours") as failed:
        other = job_model_note(working, view)
        # a session opened from the job's address (nothing pruned or loaded since) opens the model the job started from
        if other is not None and state.linked_job == view.job.id and not working.steps:
            with st.spinner("Opening the model the job started from…"):
                working = restore_job_session(state, view)
            other = None
    state.linked_job = None
    if other is not None:
        st.info(other + " Its verdict below compares the job's own start and result; to use its fine-tuned model, "
                "open the model it ran on (this replaces your model and its pruning steps).", icon=":material/info:")
        if st.button("Open the model this job ran on", key="finetune_open_job_model", icon=":material/open_in_new:"):
            with report_errors("opening the model the job started from"):
                kept = keep_work(state)             # the session's own work is kept as a run first
                working = restore_job_session(state, view)
                if kept is not None:
                    notify(state, f"Your previous session's work was kept as run {kept} (listed on Experiments).")
                st.rerun()
    verdict = job_verdict(state, working, view)
    adopted = state.tuned.checkpoint if state.tuned is not None and state.tuned.job_id == view.job.id else None
    if verdict is not None:
        if verdict.outcome == "improved":
            st.success(verdict.headline(), icon=":material/check_circle:")
        elif verdict.outcome == "unchanged":
            st.info(verdict.headline() + " The fine-tuned model is not measurably different from the one it "
                    "started from; your pruned model stays as it is unless you choose otherwise.",
                    icon=":material/info:")
        else:
            st.warning(verdict.headline() + " The fine-tuned model is worse than the one it started from; your "
                       "pruned model stays as it is unless you choose otherwise.", icon=":material/warning:")
        st.caption(f"A change of less than {FINETUNE_TOLERANCE:.1%} of the perplexity counts as no measurable "
                   "change; perplexities are shown to 4 significant digits.")
        if not verdict.last_is_best:
            where = ("the model before fine-tuning" if verdict.best_step == 0
                     else f"the checkpoint at step {verdict.best_step}")
            st.info(f"The lowest validation perplexity of the run was {readable(verdict.best_value)}, at {where}; "
                    f"the last evaluation gave {readable(verdict.last_value)} (the run's own validation curve).",
                    icon=":material/info:")
        if other is None and not failed:          # adopting needs the job's own model open in this session
            adopt_buttons(view, verdict, adopted)
    if state.tuned is not None:
        st.page_link("app_pages/compare.py", label="Compare base, pruned and fine-tuned text",
                     icon=":material/compare_arrows:")
if not view.curves.empty:
    st.download_button("Download the curves (CSV)", view.curves.to_csv(index=False).encode("utf-8"),
                       file_name=f"finetune-{view.job.id}.csv", mime="text/csv", key="finetune_csv")
