"""Experiments page: every run in the experiment store, like a run tracker: named runs, a colour per run,
overlaid curves, log axes, readable settings and results, and a side-by-side diff of two runs' settings."""

import pandas as pd
import streamlit as st

from app_support.state import report_errors, shared_store
from app_support.weights_runs import weights_run_charts
from sentinel.charts import compress_chart, level_chart, overlay_chart
from sentinel.ui.compress_runs import compress_points, compress_runs_frame
from sentinel.ui.history import config_diff, experiments_frame, level_frame, overlay_frame, readable_table
from sentinel.ui.protocol import EVAL_PROTOCOL

st.title(":material/history: Experiments")
st.caption("Every fine-tune, strategy comparison, target prune, sparsify run, sensitivity scan, compress and "
           "benchmark run recorded in the experiment store (in the data folder). Runs started from the command "
           "line with the same data folder show up here too.")

with report_errors("reading the experiment store") as failed:
    store = shared_store()
    records = store.list_experiments()
if failed:
    st.stop()
if not records:
    st.info("No experiments yet. Start a fine-tune on the Fine-tune page, compare strategies or prune to a target "
            "on Prune, sparsify or scan layer sensitivity on Weights, or run `sentinel benchmark` or "
            "`sentinel compress`.")
    st.stop()

table = experiments_frame(records)
st.dataframe(table, hide_index=True, key="experiments_table", width="stretch", column_config={
    "id": st.column_config.TextColumn("id", width="small"),
    "name": st.column_config.TextColumn("Run", width="large"),
    "strategy": st.column_config.TextColumn("Strategy", width="medium"),
    "pruning_ratio": st.column_config.NumberColumn("Pruned share", format="percent", width="small"),
    "perplexity": st.column_config.NumberColumn("Perplexity", format="%.2f", width="small",
                                                help="Dashboard runs: the app's protocol, "
                                                     f"{EVAL_PROTOCOL.describe()}. Other runs: their own."),
    "perplexity_note": st.column_config.TextColumn("Perplexity note", width="medium",
                                                   help="Why a run shows no perplexity under that heading."),
    "created": st.column_config.TextColumn("Created", width="small"),
})
st.download_button("Download this table (CSV)", table.to_csv(index=False).encode("utf-8"),
                   file_name="experiments.csv", mime="text/csv", icon=":material/download:", key="experiments_csv")
log = st.toggle("Log scale for perplexity", key="experiments_log",
                help="Runs that diverge reach perplexities far above the rest; a log axis keeps all readable.")

levels = level_frame(records)
if not levels.empty:
    models = sorted(levels["model"].unique())
    model = st.selectbox("Model", models, key="experiments_model") if len(models) > 1 else models[0]
    st.altair_chart(level_chart(levels[levels["model"] == model].drop(columns="model"), log=log), width="stretch")
    st.caption("Each point is a measurement a recorded run made: the share of heads it pruned and the "
               "perplexity (lower is better), right after pruning (circles) and after fine-tuning (triangles).")

labels = {r.id: f"{r.name} · {r.status} · {r.id}" for r in records}
st.subheader("Curves of several runs")
with_curves = [r.id for r in records if store.get_curves(r.id)]
chosen_runs = st.multiselect("Runs to overlay", with_curves, default=with_curves[:3], format_func=labels.get,
                             key="experiments_overlay")
if chosen_runs:
    curves = {labels[run]: store.get_curves(run) for run in chosen_runs}
    cols = st.columns(2)
    for column, (name, title) in zip(cols, (("loss", "Training loss"), ("val_perplexity", "Validation perplexity"))):
        frame = overlay_frame(curves, name)
        if not frame.empty:
            column.altair_chart(overlay_chart(frame, title, log=log and name == "val_perplexity"), width="stretch")

st.subheader("One run")
chosen = st.selectbox("Run", list(labels), format_func=labels.get, key="experiments_pick")
record = next(r for r in records if r.id == chosen)
cols = st.columns(2)
with cols[0]:
    st.markdown("**Settings**")
    st.dataframe(readable_table(record.config), hide_index=True, width="stretch")
with cols[1]:
    st.markdown("**Results**")
    st.dataframe(readable_table(record.summary), hide_index=True, width="stretch")

weights_run_charts(record)          # sparsify / sensitivity runs: their own charts (app_support.weights_runs)

pruned = store.get_pruned_heads(record.id)
if pruned:
    st.markdown("**Pruned heads**")
    st.dataframe(pd.DataFrame(pruned), hide_index=True)
samples = store.get_samples(record.id)
if samples:
    st.markdown("**Samples**")
    st.dataframe(pd.DataFrame([{"step": s.step, "prompt": s.prompt, "text": s.text} for s in samples]),
                 hide_index=True)

if len(records) > 1:
    st.subheader("Compare two runs' settings")
    other = st.selectbox("Against", [r for r in labels if r != chosen], format_func=labels.get,
                         key="experiments_diff")
    diff = config_diff(record, next(r for r in records if r.id == other))
    if diff.empty:
        st.info("The two runs have the same settings.")
    else:
        st.dataframe(diff, hide_index=True, width="stretch")

# -- compress runs (`sentinel compress` and Prune's target prunes): predicted vs measured, perplexity per stage --
compress_runs = compress_runs_frame(records)
if not compress_runs.empty:
    st.subheader("Compress runs")
    st.dataframe(compress_runs, hide_index=True, key="compress_runs_table", width="stretch", column_config={
        "run": st.column_config.TextColumn("Run", width="medium"),
        **{c: st.column_config.NumberColumn(c, format="localized") for c in
           ("params before", "params predicted", "params after", "FLOPs predicted", "FLOPs after")},
    })
    points = compress_points(compress_runs)
    if not points.empty:
        st.altair_chart(compress_chart(points, log=log), width="stretch", key="compress_runs_chart")
    st.caption("Each run removed units to meet a target (share of parameters or FLOPs), predicted before removal and "
               "measured after; perplexity before, right after removal and after recovery (or fine-tuning), on "
               f"the app's protocol for dashboard runs ({EVAL_PROTOCOL.describe()}), the CLI's own for compress.")
