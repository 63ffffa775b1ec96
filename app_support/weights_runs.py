"""Experiments page, weight-level runs: the per-layer sparsity of a sparsify run and the chart of a layer-sensitivity
scan (records of kinds "weights-sparsify" and "weights-sensitivity"), drawn from their stored summaries."""

import streamlit as st

from app_support.tables import table_downloads
from sentinel.sparsity.sensitivity import sensitivity_lines
from sentinel.store import ExperimentRecord
from sentinel.ui.weights import SPARSIFY_KIND, layer_sparsity_of, schedule_frame, sparsegpt_settings
from sentinel.ui.weights_sensitivity import SENSITIVITY_KIND, sensitivity_of, sensitivity_table


def weights_run_charts(record: ExperimentRecord) -> None:
    """Charts of a sparsify or sensitivity run; nothing for other kinds."""
    if record.kind == SENSITIVITY_KIND:
        scan = sensitivity_of(record.summary)
        if scan is None:
            st.info(f"This scan is {record.status}; it recorded no result.")
            return
        st.markdown("**Layer sensitivity**")
        st.altair_chart(sensitivity_lines(scan), key="experiments_sensitivity_chart")
        table = sensitivity_table(scan, record.summary.get("suggestion"))
        st.dataframe(table, hide_index=True, key="experiments_sensitivity_table")
        table_downloads(table, f"run-{record.id}-sensitivity", "experiments_sensitivity_table")
    elif record.kind == SPARSIFY_KIND:
        settings = sparsegpt_settings(record.config)
        if settings is not None:
            st.caption(settings)
        layers = layer_sparsity_of(record.summary)
        if layers is None:
            return
        st.markdown("**Share of zero weights per layer**")
        st.bar_chart(layers, x="layer", y="sparsity", color="matrix", stack=False, x_label="Layer",
                     y_label="Share of zero weights")
        history = record.summary.get("schedule_history") or []
        if history:
            st.line_chart(schedule_frame(history), x="step", y="sparsity", color="which", x_label="Training step",
                          y_label="Share of zero weights")
