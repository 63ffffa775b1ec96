"""Review: a one-page verdict on the session's pruned model against its base, for the person who decides."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_support.state import dashboard, report_errors, require_model, shared_store
from sentinel.demo.prompts import SAMPLE_COUNT, demo_model_name, prompts_for_source
from sentinel.evaluation.tasks import INSTALL_HINT, bundled_task_for, lm_eval_installed, select_tasks
from sentinel.ui.format import plural
from sentinel.ui.reports import REPORT_PARAM, REPORTS_PAGE, embeddable, keep_report

REVIEW_CACHE = "review"      # state.caches: (model identity, version, criteria) -> (Review, html, kept report id)

state = dashboard()
st.title(":material/fact_check: Review")
st.caption("Set what the pruned model must achieve; Sentinel measures the base and your model side by side and "
           "says, criterion by criterion, whether it does — with each measured value and its spread. The same "
           "page as `sentinel report` writes, to download and share (it opens offline and prints to PDF).")
working = require_model(state)

with st.form("review_settings"):
    cols = st.columns(4)
    allowed = cols[0].number_input("Allowed perplexity increase (%)", 0.0, 1000.0, 5.0, 0.5, key="review_ppl",
                                   help="Perplexity measures how surprised the model is by held-out text: lower "
                                        "is better. A few percent is usually invisible in the text; a doubling is not.")
    smaller = cols[1].number_input("Required size reduction (%)", 0.0, 99.0, 0.0, 1.0, key="review_size",
                                   help="Fewer parameters than the base, as a share of the base's.")
    speedup = cols[2].number_input("Required prefill speed-up (×, 0 = none)", 0.0, 100.0, 0.0, 0.05,
                                   key="review_speed", help="Every timed pair must reach it to pass.")
    rounds = cols[3].number_input("Timing rounds", 2, 20, 5, 1, key="review_rounds",
                                  help="The two models are timed in turns this many times; more rounds, less noise.")
    task = bundled_task_for(demo_model_name(working.base.source))
    installed = lm_eval_installed()
    why_not = (None if task is not None and installed else
               f"Task accuracy needs lm-evaluation-harness: {INSTALL_HINT}" if not installed else
               "No bundled task fits this model; `sentinel report --tasks NAMES` runs lm-eval's own tasks.")
    use_task = st.toggle(f"Task accuracy ({task})" if task else "Task accuracy", False, key="review_task",
                         disabled=why_not is not None,
                         help=why_not or "Choose the true next sentence among four, on held-out text the model "
                                         "never trained on (lm-evaluation-harness); chance is 25%.")
    if why_not:
        st.caption(why_not)
    go = st.form_submit_button("Build the review", type="primary", disabled=not working.steps)
if not working.steps:
    st.info("Your model has no pruning steps yet: prune it on the Prune page first, then review it here.",
            icon=":material/info:")
    st.stop()

key = (id(working), working.version, allowed, smaller, speedup, rounds, use_task)
if go:
    from sentinel.review import ReviewCriteria, ReviewSubject, build_review, render_html

    with report_errors("building the review") as failed:
        name = Path(working.base.source).name
        prompts = list(prompts_for_source(working.base.source)[:SAMPLE_COUNT])
        criteria = ReviewCriteria(allowed / 100, smaller / 100, speedup if speedup > 0 else None)
        with st.spinner("Measuring both models, generating text and timing them in turns…"):
            review = build_review(
                ReviewSubject("base", name, working.base.model, working.tokenizer, working.base.source),
                [ReviewSubject("pruned", f"{name}, {plural(len(working.steps), 'pruning step')}", working.model,
                               working.tokenizer, working.base.source)],
                criteria, prompts, speed_rounds=int(rounds),
                tasks=select_tasks([task]) if use_task and task else None)
        page = render_html(review)
        state.caches[REVIEW_CACHE] = (key, review, page, None)
    if failed:
        st.stop()
    with report_errors("keeping the report in the data folder"):      # the review stays shown if this fails
        state.caches[REVIEW_CACHE] = (key, review, page, keep_report(shared_store(), review, page))

cached = state.caches.get(REVIEW_CACHE)
if cached is None or cached[0] != key:
    st.caption("Press **Build the review** to measure (about half a minute on the bundled model).")
    st.stop()
_, review, page, report_id = cached
verdict = review.verdicts[0]
show = {"pass": st.success, "fail": st.error, "inconclusive": st.warning}[verdict.status]
show(verdict.headline())
st.table({"Criterion": [c.name for c in verdict.criteria], "Required": [c.required for c in verdict.criteria],
          "Measured": [c.measured for c in verdict.criteria], "Result": [c.status for c in verdict.criteria]})
cols = st.columns([1, 2])
cols[0].download_button("Download the review (HTML)", page, file_name="sentinel-review.html", mime="text/html",
                        key="review_download", icon=":material/download:")
if report_id is not None:
    cols[1].page_link(REPORTS_PAGE, label="Read-only link to this report (kept in the data folder, listed on "
                                          "Experiments)", icon=":material/link:",
                      query_params={REPORT_PARAM: report_id})
st.html(embeddable(page))
