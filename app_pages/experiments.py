"""Experiments page: every run in the experiment store, with its settings, pruned heads, curves and samples."""

import pandas as pd
import streamlit as st

from sentinel.store import sentinel_home
from sentinel.ui.charts import curves_chart, level_chart
from sentinel.ui.history import curves_frame, experiments_frame, level_frame
from app_support.state import report_errors, shared_store

st.title(":material/history: Experiments")
st.caption(f"Every fine-tune and benchmark run recorded in the experiment store ({sentinel_home()}). "
           "Runs started from the command line show up here too.")

with report_errors("reading the experiment store") as failed:
    store = shared_store()
    records = store.list_experiments()
if failed:
    st.stop()
if not records:
    st.info("No experiments yet. Start a fine-tune on the Fine-tune page, or run `sentinel benchmark`.")
    st.stop()

table = experiments_frame(records)
st.dataframe(table, hide_index=True, key="experiments_table")
st.download_button("Download this table (CSV)", table.to_csv(index=False).encode("utf-8"),
                   file_name="experiments.csv", mime="text/csv", icon=":material/download:", key="experiments_csv")

levels = level_frame(records)
if not levels.empty:
    models = sorted(levels["model"].unique())
    model = st.selectbox("Model", models, key="experiments_model") if len(models) > 1 else models[0]
    st.altair_chart(level_chart(levels[levels["model"] == model].drop(columns="model")), width="stretch")
    st.caption("Each point is a measurement a recorded run made: the share of heads it pruned and the "
               "validation perplexity (lower is better), right after pruning and after fine-tuning.")

labels = {r.id: f"{r.name} · {r.kind} · {r.status} · {r.id}" for r in records}
chosen = st.selectbox("Run", list(labels), format_func=labels.get, key="experiments_pick")
record = next(r for r in records if r.id == chosen)
cols = st.columns(2)
with cols[0]:
    st.markdown("**Settings**")
    st.json(record.config, expanded=1)
with cols[1]:
    st.markdown("**Final numbers**")
    st.json(record.summary, expanded=1)

pruned = store.get_pruned_heads(record.id)
if pruned:
    st.markdown("**Pruned heads**")
    st.dataframe(pd.DataFrame(pruned), hide_index=True)
curves = curves_frame(store.get_curves(record.id))
if not curves.empty:
    shown = [c for c in ("loss", "val_perplexity", "tokens_per_second") if c in curves.columns]
    titles = {"loss": "Training loss", "val_perplexity": "Validation perplexity", "tokens_per_second": "Tokens/s"}
    for column, name in zip(st.columns(len(shown)), shown):
        column.altair_chart(curves_chart(curves, name, titles[name]), width="stretch")
samples = store.get_samples(record.id)
if samples:
    st.markdown("**Samples**")
    st.dataframe(pd.DataFrame([{"step": s.step, "prompt": s.prompt, "text": s.text} for s in samples]),
                 hide_index=True)
