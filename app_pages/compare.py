"""Compare page: up to four models — the session's or saved ones — side by side on one prompt with identical
settings and seed: text, protocol perplexity, size, and (on request) speed timed in interleaved rounds."""

import html
import time

import streamlit as st

from app_support.compare import Column, candidates, choose, column, perplexity, size, stable_identity, timed_model
from app_support.state import dashboard, report_errors, require_model, shared_jobs, shared_store
from app_support.progress import job_progress
from app_support.widgets import prompt_input
from sentinel.evaluation.paired import SPEED_NEW_TOKENS, SPEED_PROMPT_TOKENS, SPEED_REPEATS
from sentinel.generation import GenerationSettings, compare_generations
from sentinel.ui.compare import check_choice, speed_job_for, speed_of, speed_signature, speed_table, start_speed_job
from sentinel.ui.format import job_failure, plural, shared_prefix_words, signed_percent, word_diff_html
from sentinel.ui.history import readable
from sentinel.ui.protocol import EVAL_PROTOCOL

SPEED_JOB = "compare-speed-job"       # state.caches: this session's latest speed job id

state = dashboard()
st.title(":material/compare_arrows: Compare")
st.caption("Up to four models on the same prompt, with the same settings and the same random seed, so any "
           "difference in the text comes from the models themselves. Words that differ from the first model's "
           "text are highlighted; every other figure is compared with the first model too.")
working = require_model(state)

available = candidates(state)
chosen = choose(state, available)
with report_errors("choosing the models") as bad_choice:
    check_choice(chosen)
if bad_choice:
    st.stop()

prompt = prompt_input("Prompt", "compare_prompt", working, area=True)
cols = st.columns(5)
max_new = cols[0].number_input("New tokens", 1, 200, 40, key="compare_tokens")
greedy = cols[1].toggle("Greedy", True, key="compare_greedy", help="Always take the most likely next token.")
temperature = cols[2].number_input("Temperature", 0.05, 2.0, 0.8, 0.05, key="compare_temperature",
                                   disabled=greedy)
top_p = cols[3].number_input("Top-p", 0.05, 1.0, 0.95, 0.05, key="compare_top_p", disabled=greedy)
seed = cols[4].number_input("Seed", 0, 2**31 - 1, 0, key="compare_seed")
settings = GenerationSettings(max_new_tokens=int(max_new), greedy=greedy, temperature=float(temperature),
                              top_k=50, top_p=float(top_p), seed=int(seed))

loaded = [column(state, working, available[key]) for key in chosen]
columns: list[Column] = [c for c in loaded if c is not None]
if not columns:
    st.info("None of the chosen models could be opened; choose another one above.")
    st.stop()
compared = tuple((c.candidate.key, c.identity) for c in columns)     # what a result was made with

if "pruned" in chosen and not working.steps:
    st.info("Nothing is pruned yet, so the pruned model is the base model. Prune on the Prune page first.")
if len(available) <= 2:
    st.caption("Fine-tune on the Fine-tune page (and use its model) to add the fine-tuned model; sparsify a copy "
               "on the Weights page to add it here; saved and exported models appear in the list by themselves.")

buttons = st.columns([1, 1, 4])
if buttons[0].button("Generate", type="primary", key="compare_go", icon=":material/play_arrow:"):
    with st.spinner("Generating…"), report_errors("generating text"):
        results = compare_generations({c.candidate.key: c.model for c in columns}, working.tokenizer, prompt,
                                      settings, tokenizers={c.candidate.key: c.tokenizer for c in columns})
        state.caches["compare"] = (compared, results)
signature = speed_signature([(c.candidate.key, *stable_identity(state, working, c)) for c in columns])
speed_job = speed_job_for(shared_store(), signature, state.caches.get(SPEED_JOB))
timing = speed_job is not None and speed_job.state in ("queued", "running")
if buttons[1].button("Measure speed", key="compare_speed", icon=":material/speed:", disabled=timing,
                     help=f"Times every chosen model in {SPEED_REPEATS} interleaved rounds of {SPEED_PROMPT_TOKENS} "
                          f"prompt + {SPEED_NEW_TOKENS} generated tokens (the order rotating each round) in the "
                          "background, and compares each with the first model round by round."):
    with report_errors("starting the speed measurement") as failed_start, \
            st.spinner("Saving your session's models for the job…"):
        device = state.choice.device if state.choice else "auto"
        state.caches[SPEED_JOB] = start_speed_job(shared_jobs(), [timed_model(state, working, c) for c in columns],
                                                  signature, device)
    if not failed_start:
        st.rerun()                              # draw the page again with the job's progress, the button disabled

labels = {c.candidate.key: c.candidate.label for c in columns}
shown = state.caches.get("compare")
if shown is not None and shown[0] != compared:
    st.info("The models changed since the last generation; press Generate to compare them again.")
elif shown is not None:
    results = shown[1]
    first = columns[0]
    reference = results[0].text
    st.caption(f"Perplexity below: {EVAL_PROTOCOL.describe()} — the same measurement as on every page.")
    first_ppl = perplexity(state, working, first)
    first_size = size(state, first)
    for col, result, place in zip(columns, results, st.columns(len(results))):
        is_first = col is first
        with place:
            st.subheader(col.candidate.label)
            st.html(f"<div class='sample' id='compare-{col.candidate.key}' style='white-space: pre-wrap'>"
                    f"<b>{html.escape(result.prompt)}</b> {word_diff_html(reference, result.text)}</div>")
            if not is_first:
                same = shared_prefix_words(reference, result.text)
                if result.text == reference:
                    st.caption(f"Identical to {first.candidate.label}'s text.")
                elif same == 0:
                    st.caption(f"Differs from {first.candidate.label}'s text from the first word on.")
                else:
                    st.caption(f"Same as {first.candidate.label}'s text for the first {same} words.")
            ppl = perplexity(state, working, col)
            if ppl is not None:
                change = None if is_first or first_ppl is None else signed_percent(first_ppl.value, ppl.value) or None
                st.metric("Perplexity", readable(ppl.value), change, delta_color="inverse",
                          help=f"The app's one protocol: {EVAL_PROTOCOL.describe(ppl.tokens)}.")
            figures = size(state, col)
            helps = figures.help()
            for label, value in figures.rows().items():
                change = None
                if label == "Parameters" and not is_first:
                    change = signed_percent(first_size.parameters, figures.parameters) or None
                st.metric(label, value, change, delta_color="off", help=helps.get(label))

own_job = speed_job is not None and speed_job.id == state.caches.get(SPEED_JOB)
if timing:
    job_progress(speed_job.id, "Measuring speed in the background", "compare_speed_cancel",
                 "Stop timing; nothing else on the page changes.", can_cancel=own_job)
    if not own_job:
        st.caption(f"Job {speed_job.id} is timing exactly these models (same device and dtype); it was started "
                   "before a reload or by another session, so only its result is shown here.")
elif speed_job is not None and speed_job.state == "succeeded":
    timed = speed_of(speed_job)
    st.subheader("Measured speed")
    st.table(speed_table(timed, labels))
    st.caption(f"Tokens per second: the median of {timed.repeats} interleaved rounds (lowest–highest in brackets), "
               f"{timed.prompt_tokens} prompt tokens then {timed.new_tokens} generated, {plural(timed.threads, 'CPU thread')}. "
               "Each ratio to the first model is taken round by round; when its spread covers 1.0 there is no "
               f"measurable difference. Measured by job {speed_job.id}, finished "
               f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(speed_job.finished or speed_job.created))}.")
elif own_job and speed_job.state == "cancelled":
    st.info("The speed measurement was cancelled; press Measure speed to time the models again.",
            icon=":material/cancel:")
elif own_job:
    st.warning(f"The speed measurement {speed_job.state}: {job_failure(speed_job)}", icon=":material/warning:")
elif SPEED_JOB in state.caches:
    st.caption("The models changed since the last timing; press Measure speed to time them again.")
