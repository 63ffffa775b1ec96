"""Compare page: one prompt, identical settings and seed, base / pruned / pruned + fine-tuned side by side."""

import html

import streamlit as st

from sentinel.demo.prompts import default_prompts
from sentinel.evaluation.size import parameter_count
from sentinel.generation import GenerationSettings, compare_generations
from sentinel.ui.format import human_count, shared_prefix_words, signed_percent, word_diff_html
from app_support.state import base_figures, current_figures, dashboard, report_errors, require_model, tuned_figures

IDS = {"Base model": "base", "Pruned": "pruned", "Pruned + fine-tuned": "tuned"}

state = dashboard()
st.title(":material/compare_arrows: Compare")
st.caption("The same prompt, the same settings and the same random seed for every model, so any difference in "
           "the text comes from the models themselves. Words that differ from the base model are highlighted.")
working = require_model(state)

prompt = st.text_area("Prompt", default_prompts()[0], key="compare_prompt", height=80)
cols = st.columns(5)
max_new = cols[0].number_input("New tokens", 1, 200, 40, key="compare_tokens")
greedy = cols[1].toggle("Greedy", True, key="compare_greedy", help="Always take the most likely next token.")
temperature = cols[2].number_input("Temperature", 0.05, 2.0, 0.8, 0.05, key="compare_temperature",
                                   disabled=greedy)
top_p = cols[3].number_input("Top-p", 0.05, 1.0, 0.95, 0.05, key="compare_top_p", disabled=greedy)
seed = cols[4].number_input("Seed", 0, 2**31 - 1, 0, key="compare_seed")
settings = GenerationSettings(max_new_tokens=int(max_new), greedy=greedy, temperature=float(temperature),
                              top_k=50, top_p=float(top_p), seed=int(seed))



def compared_state() -> tuple:
    """Which models a generation was made with: the session copy, its version and the fine-tune job."""
    return id(working), working.version, state.tuned.job_id if state.tuned else None


models = {"Base model": working.base.model, "Pruned": working.model}
if state.tuned is not None:
    models["Pruned + fine-tuned"] = state.tuned.model
if st.button("Generate", type="primary", key="compare_go", icon=":material/play_arrow:"):
    with st.spinner("Generating…"), report_errors("generating text"):
        results = compare_generations(models, working.tokenizer, prompt, settings)
        state.caches["compare"] = (compared_state(), results)

if not working.steps:
    st.info("Nothing is pruned yet, so the pruned column is the base model. Prune on the Prune page first.")
if state.tuned is None:
    st.caption("Fine-tune on the Fine-tune page to add a third column.")

shown = state.caches.get("compare")
if shown is not None and shown[0] != compared_state():
    st.info("The models changed since the last generation; press Generate to compare them again.")
elif shown is not None:
    results = shown[1]
    figures = {"Base model": base_figures(state, working), "Pruned": current_figures(state, working)}
    if state.tuned is not None:
        figures["Pruned + fine-tuned"] = tuned_figures(state)
    reference = results[0].text
    shown_fig = figures["Base model"]
    if shown_fig is not None:
        st.caption(f"Perplexity below: {shown_fig.perplexity_note} — the same measurement as on every page. "
                   "Tokens/s is this one generation's speed, a single timing (see Prune for paired timings).")
    columns = st.columns(len(results))
    for column, result in zip(columns, results):
        with column:
            st.subheader(result.label)
            st.html(f"<div class='sample' id='compare-{IDS[result.label]}' style='white-space: pre-wrap'>"
                    f"<b>{html.escape(result.prompt)}</b> {word_diff_html(reference, result.text)}</div>")
            same = shared_prefix_words(reference, result.text)
            if result is not results[0]:
                if result.text == reference:
                    st.caption("Identical to the base model's text.")
                elif same == 0:
                    st.caption("Differs from the base model's text from the first word on.")
                else:
                    st.caption(f"Same as the base model's text for the first {same} words.")
            fig = figures.get(result.label)
            base_fig = figures["Base model"]
            is_base = result is results[0]
            if fig is not None and base_fig is not None:
                change = None if is_base else signed_percent(base_fig.perplexity, fig.perplexity) or None
                st.metric("Perplexity", f"{fig.perplexity:.2f}", change, delta_color="inverse",
                          help=f"The app's one protocol: {fig.perplexity_note}.")
            params = parameter_count(models[result.label])
            change = None if is_base else signed_percent(parameter_count(working.base.model), params) or None
            st.metric("Parameters", human_count(params), change, delta_color="off")
            st.metric("Tokens/s (this generation)", f"{result.tokens_per_s:,.0f}")
