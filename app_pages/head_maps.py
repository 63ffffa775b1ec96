"""Maps page: per-head scores as layer × head heat maps on a sample text (click heads to select them), and the
neuron and layer maps (`app_support.widgets.unit_maps_view`)."""

import streamlit as st

from app_support.first_map import draw_cached_first_map, map_title   # no torch: the cached first map draws at once

st.title(":material/grid_on: Maps")
st.caption("How each unit of the model — attention head, MLP neuron or whole layer — behaves on the sample text; "
           "the numbers come from running the model you loaded.")
controls = st.container()           # sample text, units and metric: filled once the model is loaded
map_slot = st.empty()               # the head map: a new session's cached map is drawn before torch loads
drawn_early = draw_cached_first_map(map_slot)

from app_support.state import (current_maps, dashboard, report_errors,  # noqa: E402 (imports torch)
                               require_model, strategy_scores)
from app_support.widgets import (adopt_head_scores, head_map, metric_job_view, selection_list,  # noqa: E402
                                 unit_maps_view)
from sentinel.demo.prompts import default_prompts
from sentinel.errors import DataError, InvalidPruningPlan
from sentinel.pruning.plan import plan_to_pairs
from sentinel.ui.analysis import ON_REQUEST, UPLOAD_ACCEPT_MB, HeadMaps, block_size_for, pasted_text, uploaded_text
from sentinel.ui.choices import MIN_STABLE_TOKENS, UPLOAD_LIMIT_MB, SampleText
from sentinel.charts import METRICS, attention_heatmap
from sentinel.ui.inside import MAX_TOKENS, head_pattern, head_to_look_at
from sentinel.ui.pruning import preview_plan
from sentinel.ui.format import plural
from sentinel.ui.selection import head_label

state = dashboard()
working = require_model(state, map_slot if drawn_early else None)

TEXT_KINDS = {"bundled": "Bundled validation text", "pasted": "Paste text", "uploaded": "Upload a file"}
with controls.expander(f"Sample text: {state.text.name}", expanded=False, icon=":material/description:"):
    kind = st.radio("Text", list(TEXT_KINDS), format_func=TEXT_KINDS.get, horizontal=True, key="text_kind")
    candidate: SampleText | None = SampleText() if kind == "bundled" else None
    if kind == "pasted":
        typed = st.text_area("Text to analyse", key="text_pasted", height=150)
        candidate = pasted_text(typed)
    elif kind == "uploaded":
        upload = st.file_uploader(f"A .txt, .jsonl or .csv file (up to {UPLOAD_LIMIT_MB} MB; jsonl/csv need a "
                                  "'text' column)", type=["txt", "jsonl", "csv"], key="text_upload",
                                  max_upload_size=UPLOAD_ACCEPT_MB)
        if upload is not None:
            candidate = uploaded_text(upload.name, upload.getvalue())
    cols = st.columns(2)
    samples = cols[0].slider("Samples", 1, 128, state.map_samples, key="map_samples",
                             help="How many blocks of the text the maps average over (the `sentinel` command "
                                  "uses the same default, so both choose the same units).")
    seq_len = cols[1].select_slider("Tokens per sample", [32, 64, 128, 256, 512], state.map_seq_len,
                                    key="map_seq_len")
    if st.button("Use this text", key="text_apply", icon=":material/check:"):
        if candidate is None:
            st.error("No file chosen yet: drop a .txt, .jsonl or .csv file on the box above, or choose another "
                     "kind of text.", icon=":material/error:")
        else:
            with report_errors("reading the sample text"):
                size = block_size_for(working.model, seq_len)
                candidate.blocks(working.tokenizer, size, samples * size)   # reject empty/binary text now
                state.text, state.map_samples, state.map_seq_len = candidate, samples, seq_len
                st.rerun()

UNIT_LABELS = {"head": "Attention heads", "neuron": "MLP neurons", "layer": "Layers"}
unit_kind = controls.segmented_control("Units", list(UNIT_LABELS), format_func=UNIT_LABELS.get, default="head",
                                 key="maps_kind", required=True)
if unit_kind != "head":
    map_slot.empty()
    unit_maps_view(state, working, unit_kind)
    st.stop()
controls.caption("Each cell is one attention head (row = layer, column = head).")

labels = {key: METRICS[key].label for key in ("entropy_normalized", "entropy", "magnitude", "gradient",
                                                "loss_impact")}
metric = controls.segmented_control("Metric", list(labels), format_func=labels.get, default=state.map_metric,
                              key="map_metric", required=True)
state.map_metric = metric

if metric in ON_REQUEST and metric not in (current_maps(state, working, []) or HeadMaps({}, 0, "", 0, 0.0)).scores:
    computed = metric_job_view(    # a background job: progress, Cancel, found again after a reload
        state, working, "head", metric, block_size_for(working.model, state.map_seq_len), METRICS[metric].label,
        "Loss impact switches each head off alone and measures the loss again: one pass over the text per head "
        f"({len(working.active())} passes).", "loss_impact_run")
    if computed is None:
        st.stop()
    adopt_head_scores(state, working, metric, computed)

maps = current_maps(state, working, [metric])
if maps is None:
    map_slot.empty()
    st.stop()
if maps.tokens < MIN_STABLE_TOKENS:
    controls.warning(f"The sample text gives only {maps.tokens} tokens; maps from fewer than {MIN_STABLE_TOKENS} tokens change "
               "a lot with the exact wording, so read this one as a rough sketch. Paste or upload a longer text.",
               icon=":material/warning:")
settings = state.prune_settings
coming: list = []
try:            # expected refusals (loss impact not computed yet, min_heads) become a caption, not an error box
    plan, _ = preview_plan(working, strategy_scores(state, working, settings.strategy), settings,
                           working.base.layout.kv_group_size)
    coming = plan_to_pairs(plan)
    preview_note = (f"Dashed orange: the {len(coming)} heads Prune would prune now with its settings "
                    f"({settings.describe()}); change them on the Prune page.")
except (DataError, InvalidPruningPlan) as error:
    preview_note = f"No preview of Prune's choice ({settings.describe()}): {error}"
with map_slot.container():
    head_map(state, working, maps.scores[metric], metric, chart_key="head_map_chart", preview=coming,
             title=map_title(metric, maps.tokens))
st.caption(preview_note)
selection_list(state, working)
if state.selection.heads:
    count = len(state.selection.heads)
    if st.button(f"Prune the {count} selected head{'s' if count != 1 else ''}", key="prune_selected",
                 icon=":material/content_cut:", help="Opens Prune in 'By my selection' mode with these heads."):
        state.prune_selection_next = True
        st.switch_page("app_pages/prune.py")

with st.expander("Look inside a head", expanded=bool(state.selection.heads), icon=":material/visibility:"):
    every = [(layer, head) for layer in range(working.base.layout.num_layers)
             for head in range(working.base.layout.num_heads)]
    state.inside_head, state.inside_follows = head_to_look_at(state.inside_head, state.inside_follows,
                                                              state.selection.heads)
    st.session_state["inside_head"] = looked = state.inside_head     # the selector shows what the charts show

    def picked() -> None:
        state.inside_head = st.session_state["inside_head"]

    st.selectbox("Head", every, format_func=head_label, key="inside_head", on_change=picked,
                 help="Follows the first selected head; click a cell in the map to select one.")
    sample = st.text_input("Short text", default_prompts()[0],   # fits the bundled model's corpus
                           key="inside_text", help=f"The first {MAX_TOKENS} tokens are shown.")
    shown = bool(state.selection.heads) or st.toggle("Show this head's attention", key="inside_show",
                                                      help="Shown by itself once you select a head in the map.")
    with report_errors("looking inside the head"):
        cols = st.columns(2) if shown else []
        for column, (name, model) in zip(cols, (("Base model", working.base.model), ("Your model now", working.model))):
            pattern = head_pattern(model, working.tokenizer, sample, *looked)
            with column:
                if pattern.weights is None:
                    st.info(f"{name}: {head_label(looked)} is removed, so it attends to nothing.")
                    continue
                st.altair_chart(attention_heatmap(pattern.frame(), f"{name}: {head_label(looked)}"), width="stretch")
                note = " (masked: it still attends like this, but its output is switched off)" \
                    if pattern.status == "masked" else ""
                st.caption(f"Attends most to{note}: " + ", ".join(f"“{t}” {w:.0%}" for t, w in pattern.top))
    st.caption("Each row is a token and how it spreads its attention over the earlier tokens (a causal model "
               "only looks back); the percentages are the mean attention each token receives.")

st.caption(f"Computed on your model ({plural(len(working.steps), 'pruning step')}) over {maps.tokens:,} tokens of "
           f"{state.text.name}; {maps.seconds:.2f} s of computing so far.")
st.download_button("Download the scores computed so far (CSV)", maps.frame().to_csv(index=False).encode("utf-8"),
                   file_name="head_scores.csv", mime="text/csv", icon=":material/download:", key="scores_csv")
