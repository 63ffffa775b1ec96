"""Head maps page: per-head scores as layer × head heat maps on a sample text; click heads to select them."""

import streamlit as st

from sentinel.ui.analysis import UPLOAD_LIMIT_MB, SampleText, block_size_for, compute_maps, pasted_text, uploaded_text
from sentinel.ui.charts import METRICS
from sentinel.ui.state import current_maps, dashboard, maps_key, report_errors, require_model
from sentinel.ui.widgets import head_map, selection_list

state = dashboard()
st.title(":material/grid_on: Head maps")
st.caption("Each cell is one attention head (row = layer, column = head). Colours show how the head behaves "
           "on the sample text; the numbers come from running the model you loaded.")
working = require_model(state)

TEXT_KINDS = {"bundled": "Bundled validation text", "pasted": "Paste text", "uploaded": "Upload a file"}
with st.expander(f"Sample text: {state.text.name}", expanded=False, icon=":material/description:"):
    kind = st.radio("Text", list(TEXT_KINDS), format_func=TEXT_KINDS.get, horizontal=True, key="text_kind")
    candidate: SampleText | None = SampleText() if kind == "bundled" else None
    if kind == "pasted":
        typed = st.text_area("Text to analyse", key="text_pasted", height=150)
        candidate = pasted_text(typed)
    elif kind == "uploaded":
        upload = st.file_uploader(f"A .txt, .jsonl or .csv file (up to {UPLOAD_LIMIT_MB} MB; jsonl/csv need a "
                                  "'text' column)", type=["txt", "jsonl", "csv"], key="text_upload")
        if upload is not None:
            candidate = uploaded_text(upload.name, upload.getvalue())
    cols = st.columns(2)
    samples = cols[0].slider("Samples", 1, 32, state.map_samples, key="map_samples",
                             help="How many blocks of the text the maps average over.")
    seq_len = cols[1].select_slider("Tokens per sample", [32, 64, 128, 256, 512], state.map_seq_len,
                                    key="map_seq_len")
    if st.button("Use this text", key="text_apply", icon=":material/check:"):
        if candidate is None:
            st.error("Choose a file to upload first.", icon=":material/error:")
        else:
            with report_errors("reading the sample text"):
                size = block_size_for(working.model, seq_len)
                candidate.blocks(working.tokenizer, size, samples * size)   # reject empty/binary text now
                state.text, state.map_samples, state.map_seq_len = candidate, samples, seq_len

maps = current_maps(state, working)
if maps is None:
    st.stop()

labels = {key: METRICS[key].label for key in ("entropy_normalized", "entropy", "magnitude", "gradient",
                                                "loss_impact")}
metric = st.segmented_control("Metric", list(labels), format_func=labels.get, default=state.map_metric,
                              key="map_metric", required=True)
state.map_metric = metric
scores = maps.scores.get(metric)
impact = state.caches.get("loss_impact")
if metric == "loss_impact":
    scores = impact[1] if impact is not None and impact[0] == maps_key(state, working) else None
    if scores is None:
        st.info("Loss impact switches each head off alone and measures the loss again: one pass over the "
                f"text per head ({len(working.active())} passes). It takes longer than the other maps.")
        if st.button("Compute loss impact", key="loss_impact_run", type="primary", icon=":material/play_arrow:"):
            bar = st.progress(0.0, text="Starting…")

            def step(done: int, total: int) -> None:
                bar.progress(done / total, text=f"Head {done} of {total}")

            with report_errors("measuring the loss impact"):
                size = block_size_for(working.model, state.map_seq_len)
                blocks = state.text.blocks(working.tokenizer, size, state.map_samples * size)
                result = compute_maps(working.model, working.tokenizer, blocks, ["loss_impact"], working.version,
                                      progress=step)
                state.caches["loss_impact"] = (maps_key(state, working), result.scores["loss_impact"])
                st.rerun()

if scores is not None:
    head_map(state, working, scores, metric, chart_key="head_map_chart")
selection_list(state, working)
if state.selection.heads:
    st.page_link("app_pages/prune.py", label=f"Prune the {len(state.selection.heads)} selected heads",
                 icon=":material/content_cut:")

st.caption(f"Computed on your model ({len(working.steps)} pruning steps) over {maps.tokens:,} tokens of "
           f"{state.text.name} in {maps.seconds:.2f} s.")
table = maps.frame()
if impact is not None and impact[0] == maps_key(state, working):
    table["loss_impact"] = impact[1].values.flatten().tolist()
st.download_button("Download scores (CSV)", table.to_csv(index=False).encode("utf-8"), file_name="head_scores.csv",
                   mime="text/csv", icon=":material/download:", key="scores_csv")
