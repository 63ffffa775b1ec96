"""Prune page: switch heads off by strategy + ratio or by the selected heads, see the effect, undo, save."""

import tempfile
from pathlib import Path

import streamlit as st

from sentinel.demo.prompts import default_prompts
from sentinel.models import save_model
from sentinel.pruning.strategies import strategy_names
from sentinel.ui.analysis import ON_REQUEST, before_after_table
from sentinel.ui.charts import METRICS
from sentinel.ui.format import word_diff_html
from sentinel.ui.library import model_folder_for, models_dir, zip_folder
from sentinel.ui.pruning import choose_by_selection, choose_by_strategy
from sentinel.ui.selection import HeadSelection
from sentinel.ui.state import (base_figures, current_figures, current_maps, dashboard, notify, quick_sample,
                               report_errors, require_model, show_notices, strategy_scores)
from sentinel.ui.widgets import head_map, selection_list

state = dashboard()
st.title(":material/content_cut: Prune")
st.caption("Switch attention heads off and see what it does. Masking is reversible and keeps the weights; "
           "removal cuts the heads out of the weights, so the model gets smaller and faster.")
working = require_model(state)
show_notices(state)
layout = working.base.layout

left, right = st.columns([3, 2], gap="large")
with right:
    how = st.radio("Choose heads", ["strategy", "selection"], horizontal=True, key="prune_how",
                   format_func={"strategy": "By strategy and ratio", "selection": "By my selection"}.get)
    mode = st.radio("How to prune", ["mask", "remove"], horizontal=True, key="prune_mode",
                    format_func={"mask": "Mask (reversible)", "remove": "Remove (smaller, faster)"}.get,
                    help="Masking multiplies a head's output by 0. Removal deletes its weights"
                         + (f"; this model shares K/V heads in groups of {layout.kv_group_size}, so removal "
                            "takes whole groups." if layout.kv_group_size > 1 else "."))
    min_heads = st.number_input("Keep at least this many heads per layer (min_heads)", 0, layout.num_heads, 1,
                                key="prune_min_heads")
    if how == "strategy":
        names = strategy_names()
        strategy = st.selectbox("Strategy", names, index=names.index("entropy") if "entropy" in names else 0,
                                key="prune_strategy",
                                help="entropy: the most diffuse heads first; magnitude: the smallest weights; "
                                     "gradient: those the loss reacts to least; hybrid: a mix of entropy and "
                                     "magnitude ranks; loss_impact: those whose loss rises least when switched off "
                                     "alone (compute it on Head maps first); random: a seeded draw.")
        ratio = st.slider("Share of the active heads to prune", 0.0, 0.9, 0.3, 0.05, key="prune_ratio",
                          format="%.2f")
        cols = st.columns(2)
        scope = cols[0].radio("Ranking", ["global", "per_layer"], key="prune_scope",
                              format_func={"global": "Whole model", "per_layer": "Within each layer"}.get)
        seed = cols[1].number_input("Seed", 0, 2**31 - 1, 0, key="prune_seed")
    else:
        selection_list(state, working)
    go = st.button("Prune", type="primary", key="prune_go", icon=":material/content_cut:")
    cols = st.columns(2)
    undo = cols[0].button("Undo last step", key="prune_undo", icon=":material/undo:", disabled=not working.steps)
    reset = cols[1].button("Reset", key="prune_reset", icon=":material/restart_alt:", disabled=not working.steps,
                           help="Back to the model as loaded.")

if go:
    with report_errors("pruning"):
        if how == "strategy":
            scores = strategy_scores(state, working, strategy)
            plan, label = choose_by_strategy(working, scores, strategy, ratio, int(min_heads), scope, int(seed),
                                             whole_kv_groups=(mode == "remove" and layout.kv_group_size > 1))
            step = working.apply(plan, mode, label, strategy, ratio)
        else:
            plan, label = choose_by_selection(working, state.selection.as_plan(), int(min_heads))
            step = working.apply(plan, mode, label)
        state.selection = HeadSelection((), state.selection.seen)
        notify(state, f"{'Masked' if mode == 'mask' else 'Removed'} {step.count} heads ({label})")
        st.rerun()
if undo:
    with report_errors("undoing the last step"):
        step = working.undo()
        notify(state, f"Undid: {step.mode} {step.count} heads ({step.how})")
        st.rerun()
if reset:
    working.reset()
    notify(state, "Back to the base model")
    st.rerun()

with left:
    metric = state.map_metric if state.map_metric not in ON_REQUEST else "entropy_normalized"
    maps = current_maps(state, working, [metric])
    if maps is not None:
        head_map(state, working, maps.scores[metric], metric, chart_key="prune_map_chart",
                 title=f"{METRICS[metric].label} — your model now")

st.subheader("Quick sample")
prompt = st.text_input("Prompt", default_prompts()[0], key="prune_prompt")
with report_errors("generating the quick sample"):
    base_text = quick_sample(state, working, prompt, tuned=False)
    now_text = quick_sample(state, working, prompt, tuned=True)
    cols = st.columns(2)
    cols[0].markdown("**Before** (base model, greedy)")
    cols[0].html(f"<div class='sample' id='sample-before'>{word_diff_html(base_text, base_text)}</div>")
    cols[1].markdown("**After** (your model, greedy; changed words highlighted)")
    cols[1].html(f"<div class='sample' id='sample-after' data-version='{working.version}'>"
                 f"{word_diff_html(base_text, now_text)}</div>")

st.subheader("Before and after")
before, after = base_figures(state, working), current_figures(state, working)
if before is not None and after is not None:
    st.table(before_after_table(before, after))
    st.caption(f"Before = the model as loaded; after = your copy with {len(working.steps)} pruning steps. "
               f"Perplexity on the first {after.perplexity_tokens:,} scored tokens of {state.text.name} "
               "(lower is better); tokens/s measured on this machine just now.")
if working.steps:
    st.dataframe([{"step": i + 1, **s.to_dict(), "heads": ", ".join(f"L{l}:{h}" for l, h in
                  sorted(s.heads.items()))} for i, s in enumerate(working.steps)], hide_index=True)

st.subheader("Save")
name = st.text_input("Name", f"{Path(working.base.source).name}-pruned", key="save_name",
                     help=f"Saved under {models_dir()}; load it again on the Model page.")
with report_errors("checking the name") as bad_name:
    target = model_folder_for(name)
if not bad_name:
    note = {"source": working.base.source, "steps": working.history()}
    cols = st.columns(2)
    if cols[0].button("Save to the data folder", key="save_go", icon=":material/save:"):
        with report_errors("saving the model"):
            folder = save_model(working.model, working.tokenizer, target, note=note)
            st.success(f"Saved to {folder}. Load it on the Model page under 'Saved pruned model'.",
                       icon=":material/check_circle:")

    def zipped() -> bytes:
        """The model saved into a temporary folder and zipped, only when the download is clicked."""
        with tempfile.TemporaryDirectory() as tmp:
            return zip_folder(save_model(working.model, working.tokenizer, Path(tmp) / target.name, note=note))

    cols[1].download_button("Download as zip", zipped, file_name=f"{target.name}.zip", mime="application/zip",
                            key="save_zip", icon=":material/download:", on_click="ignore")
