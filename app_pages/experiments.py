"""Experiments page: every run in the experiment store, like a run tracker: named runs (rename, tag, delete, filter),
a colour per run, overlaid curves, log axes, readable settings and results, a side-by-side diff of two runs'
settings, every table as CSV and JSON, and the review reports kept by the Review page (each at a read-only link,
`?report=<id>`)."""

import pandas as pd
import streamlit as st

from app_support.state import report_errors, shared_store
from app_support.tables import table_downloads
from app_support.weights_runs import weights_run_charts
from sentinel.charts import compress_chart, level_chart, overlay_chart
from sentinel.ui.compress_runs import compress_points, compress_runs_frame
from sentinel.ui.history import (AXIS_TITLES, all_tags, baselines, config_diff, delete_run, experiments_frame,
                                 filter_records, level_frame, overlay_frame, parse_tags, readable, readable_table)
from sentinel.ui.protocol import EVAL_PROTOCOL
from sentinel.ui.reports import REPORT_PARAM, REPORTS_PAGE, embeddable, reports_frame
from sentinel.ui.strategies import ranking_of

PENDING_DELETE = "experiments_delete_pending"     # session key: the run whose deletion awaits confirmation
NOTICE = "experiments_notice"                     # session key: what the last rename/tag/delete did

st.title(":material/history: Experiments")
with report_errors("reading the experiment store") as failed:
    store = shared_store()
if failed:
    st.stop()

# -- a kept report's read-only link: that report alone ---------------------------------------------------------------
if REPORT_PARAM in st.query_params:
    with report_errors("opening the report") as failed:
        report = store.get_report(st.query_params[REPORT_PARAM])
        page = store.read_report(report.id)
    if not failed:
        st.caption(f"{report.title} — a review report kept by the Review page; read-only.")
        st.download_button("Download this report (HTML)", page, file_name=f"sentinel-review-{report.id}.html",
                           mime="text/html", key="report_download", icon=":material/download:")
        st.html(embeddable(page))
    st.page_link(REPORTS_PAGE, label="All experiments and reports", icon=":material/history:")
    st.stop()

st.caption("Every fine-tune, strategy comparison, target prune, sparsify run, sensitivity scan, compress and "
           "benchmark run recorded in the data folder's experiment store, and the review reports kept by the Review "
           "page. Runs started from the command line show up here too.")
if NOTICE in st.session_state:
    st.success(st.session_state.pop(NOTICE), icon=":material/check:")

with report_errors("reading the experiment store") as failed:
    records = store.list_experiments()
    reports = store.list_reports()
if failed:
    st.stop()


def kept_reports() -> None:
    """The review reports the Review page kept, each with its read-only link (at the end of the page)."""
    if not reports:
        return
    st.subheader("Review reports")
    kept = reports_frame(reports)
    st.dataframe(kept, hide_index=True, key="reports_table", width="stretch")
    table_downloads(kept, "reports", "reports_table")
    for r in reports[:20]:
        st.page_link(REPORTS_PAGE, label=r.title, icon=":material/link:", query_params={REPORT_PARAM: r.id})
    st.caption("Each link shows its report read-only, as the Review page built it; share the address"
               + (f" (the newest 20 of {len(reports)} are linked here)." if len(reports) > 20 else "."))


if not records:
    st.info("No experiments yet. Start a fine-tune on the Fine-tune page, compare strategies or prune to a target "
            "on Prune, sparsify or scan layer sensitivity on Weights, or run `sentinel benchmark` or "
            "`sentinel compress`.")
    kept_reports()
    st.stop()

# -- filters ----------------------------------------------------------------------------------------------------------
cols = st.columns([2, 1, 1])
text = cols[0].text_input("Filter by name or id", key="experiments_filter_text", placeholder="e.g. entropy")
kinds = cols[1].multiselect("Kinds", sorted({r.kind for r in records}), key="experiments_filter_kinds")
tags = cols[2].multiselect("Tags", all_tags(records), key="experiments_filter_tags",
                           help="Runs with any of these tags. Tag a run under 'One run' below.")
shown = filter_records(records, text, kinds, tags)
if len(shown) < len(records):
    st.caption(f"{len(shown)} of {len(records)} runs match the filters.")
if not shown:
    st.info("No run matches these filters; clear them to see every run.", icon=":material/filter_alt_off:")
    kept_reports()
    st.stop()

table = experiments_frame(shown)
st.dataframe(table, hide_index=True, key="experiments_table", width="stretch", column_config={
    "id": st.column_config.TextColumn("id", width="small"),
    "name": st.column_config.TextColumn("Run", width="large"),
    "tags": st.column_config.TextColumn("Tags", width="small"),
    "strategy": st.column_config.TextColumn("Strategy", width="medium"),
    "pruning_ratio": st.column_config.NumberColumn("Heads pruned", format="percent", width="small"),
    "params_removed": st.column_config.NumberColumn("Parameters removed", format="percent", width="small",
                                                    help="Measured: 1 − parameters after / before. Masked units "
                                                         "keep their weights, so masking removes none."),
    "perplexity": st.column_config.NumberColumn("Perplexity", format="%.2f", width="small",
                                                help="Dashboard runs: the app's protocol, "
                                                     f"{EVAL_PROTOCOL.describe()}. Other runs: their own."),
    "ci_low": st.column_config.NumberColumn("95% CI low", format="%.2f", width="small",
                                            help="Bootstrap over the scored windows, where the run recorded it."),
    "ci_high": st.column_config.NumberColumn("95% CI high", format="%.2f", width="small"),
    "perplexity_note": st.column_config.TextColumn("Perplexity note", width="medium",
                                                   help="Why a run shows no perplexity under that heading."),
    "created": st.column_config.TextColumn("Created", width="small"),
})
table_downloads(table, "experiments", "experiments_table")
log = st.toggle("Log scale for perplexity", key="experiments_log",
                help="Runs that diverge reach perplexities far above the rest; a log axis keeps all readable.")

# -- perplexity against pruning level, by heads or by parameters -------------------------------------------------------
axis = st.segmented_control("Pruning level as", list(AXIS_TITLES), default="heads", key="experiments_axis",
                            format_func={"heads": "share of heads", "params": "share of parameters"}.get,
                            help="Heads: the share of attention heads pruned. Parameters: the share of the model's "
                                 "parameters removed, whatever was removed (heads, neurons, layers).") or "heads"
levels = level_frame(shown, axis)
left_out = set(level_frame(shown, "heads")["run"]) - set(levels["run"]) if axis == "params" else set()
if not levels.empty:
    models = sorted(levels["model"].unique())
    model = st.selectbox("Model", models, key="experiments_model") if len(models) > 1 else models[0]
    reference = baselines(records).get(model)
    st.altair_chart(level_chart(levels[levels["model"] == model].drop(columns="model"), log=log,
                                x_title=AXIS_TITLES[axis], baseline=reference.perplexity if reference else None,
                                baseline_label=f"unpruned model (run {reference.run})" if reference else "unpruned"),
                    width="stretch", key="experiments_level_chart")
    st.caption("Each point is a measurement a recorded run made: "
               + ("the share of heads it pruned" if axis == "heads" else "the share of parameters it removed")
               + " and the perplexity (lower is better), right after pruning (circles) and after fine-tuning "
                 "(triangles); a vertical bar is its 95% interval where the run recorded one. "
               + (f"Dashed: the unpruned model, {readable(reference.perplexity)}." if reference else
                  "No run recorded the unpruned model's perplexity, so there is no reference line.")
               + (f" {len(left_out)} run(s) recorded before parameter counts were kept are not drawn here."
                  if left_out else ""))
elif axis == "params" and left_out:
    st.info(f"The {len(left_out)} run(s) with a pruning level were recorded before parameter counts were kept; "
            "view them by share of heads.", icon=":material/info:")

labels = {r.id: f"{r.name} · {r.status} · {r.id}" for r in shown}
st.subheader("Curves of several runs")
with_curves = [r.id for r in shown if store.get_curves(r.id)]
chosen_runs = st.multiselect("Runs to overlay", with_curves, default=with_curves[:3], format_func=labels.get,
                             key="experiments_overlay")
if chosen_runs:
    curves = {labels[run]: store.get_curves(run) for run in chosen_runs}
    cols = st.columns(2)
    for column, (name, title) in zip(cols, (("loss", "Training loss"), ("val_perplexity", "Validation perplexity"))):
        frame = overlay_frame(curves, name)
        if not frame.empty:
            column.altair_chart(overlay_chart(frame, title, log=log and name == "val_perplexity"), width="stretch")

# -- one run: its tables, and rename / tag / delete ---------------------------------------------------------------------
st.subheader("One run")
chosen = st.selectbox("Run", list(labels), format_func=labels.get, key="experiments_pick")
record = next(r for r in shown if r.id == chosen)
cols = st.columns(2)
with cols[0]:
    st.markdown("**Settings**")
    settings = readable_table(record.config)
    st.dataframe(settings, hide_index=True, width="stretch", key="experiments_settings")
    table_downloads(settings, f"run-{record.id}-settings", "experiments_settings")
with cols[1]:
    st.markdown("**Results**")
    results = readable_table(record.summary)
    st.dataframe(results, hide_index=True, width="stretch", key="experiments_results")
    table_downloads(results, f"run-{record.id}-results", "experiments_results")

with st.expander("Rename, tag or delete this run"):
    with st.form(f"experiments_edit_{record.id}"):
        new_name = st.text_input("Name", record.name, key=f"experiments_name_{record.id}")
        new_tags = st.text_input("Tags, separated by commas", ", ".join(record.tags),
                                 key=f"experiments_tags_{record.id}", placeholder="e.g. baseline, demo")
        save = st.form_submit_button("Save name and tags", icon=":material/save:")
    if save:
        with report_errors("renaming or tagging the run") as failed:
            edited = store.edit_experiment(record.id, name=new_name, tags=parse_tags(new_tags))
        if not failed:
            st.session_state[NOTICE] = (f"Run {edited.id} saved as “{edited.name}”"
                                        + (f", tagged {', '.join(edited.tags)}." if edited.tags else ", no tags."))
            st.rerun()
    if st.session_state.get(PENDING_DELETE) != record.id:
        if st.button("Delete this run…", key="experiments_delete", icon=":material/delete:"):
            st.session_state[PENDING_DELETE] = record.id
            st.rerun()
    else:
        st.warning(f"Delete “{record.name}” ({record.id})? Its settings, results, curves, samples and pruned "
                   "heads leave the experiment store, and a dashboard fine-tune's checkpoint folder in the data "
                   "folder goes with it. Saved models, exports, reports and a command-line run's --out folder stay. "
                   "This cannot be undone.", icon=":material/warning:")
        confirm = st.columns([1, 1, 4])
        if confirm[0].button("Delete", type="primary", key="experiments_delete_confirm"):
            st.session_state.pop(PENDING_DELETE)
            with report_errors("deleting the run") as failed:
                delete_run(store, record.id)
            if not failed:
                st.session_state[NOTICE] = f"Deleted run “{record.name}” ({record.id})."
                st.rerun()
        if confirm[1].button("Keep it", key="experiments_delete_cancel"):
            st.session_state.pop(PENDING_DELETE)
            st.rerun()

weights_run_charts(record)          # sparsify / sensitivity runs: their own charts (app_support.weights_runs)

ranking = ranking_of(record)
if ranking is not None:
    st.markdown("**Strategy ranking** (lowest perplexity first)")
    st.dataframe(ranking, hide_index=True, key="experiments_ranking", width="stretch")
    table_downloads(ranking, f"run-{record.id}-strategy-ranking", "experiments_ranking")
pruned = store.get_pruned_heads(record.id)
if pruned:
    st.markdown("**Pruned heads**")
    heads = pd.DataFrame(pruned)
    st.dataframe(heads, hide_index=True, key="experiments_pruned_heads")
    table_downloads(heads, f"run-{record.id}-pruned-heads", "experiments_pruned_heads")
samples = store.get_samples(record.id)
if samples:
    st.markdown("**Samples**")
    texts = pd.DataFrame([{"step": s.step, "prompt": s.prompt, "text": s.text} for s in samples])
    st.dataframe(texts, hide_index=True, key="experiments_samples")
    table_downloads(texts, f"run-{record.id}-samples", "experiments_samples")

if len(shown) > 1:
    st.subheader("Compare two runs' settings")
    other = st.selectbox("Against", [r for r in labels if r != chosen], format_func=labels.get,
                         key="experiments_diff")
    diff = config_diff(record, next(r for r in shown if r.id == other))
    if diff.empty:
        st.info("The two runs have the same settings.")
    else:
        st.dataframe(diff, hide_index=True, width="stretch", key="experiments_diff_table")
        table_downloads(diff, f"runs-{record.id}-{other}-settings-diff", "experiments_diff_table")

# -- compress runs (`sentinel compress` and Prune's target prunes): predicted vs measured, perplexity per stage --
compress_runs = compress_runs_frame(shown)
if not compress_runs.empty:
    st.subheader("Compress runs")
    st.dataframe(compress_runs, hide_index=True, key="compress_runs_table", width="stretch", column_config={
        "run": st.column_config.TextColumn("Run", width="medium"),
        **{c: st.column_config.NumberColumn(c, format="localized") for c in
           ("params before", "params predicted", "params after", "FLOPs predicted", "FLOPs after")},
    })
    table_downloads(compress_runs, "compress-runs", "compress_runs_table")
    points = compress_points(compress_runs)
    if not points.empty:
        st.altair_chart(compress_chart(points, log=log), width="stretch", key="compress_runs_chart")
    st.caption("Each run removed units to meet a target (share of parameters or FLOPs), predicted before removal and "
               "measured after; perplexity before, right after removal and after recovery (or fine-tuning), on "
               f"the app's protocol for dashboard runs ({EVAL_PROTOCOL.describe()}), the CLI's own for compress.")

kept_reports()
