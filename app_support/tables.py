"""Streamlit piece every table on Experiments carries: its rows as CSV and as JSON, side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from sentinel.ui.history import table_files


def table_downloads(frame: pd.DataFrame, name: str, key: str) -> None:
    """Two small download buttons under a table: `name`.csv and `name`.json (the same rows and columns)."""
    csv, data = table_files(frame)
    cols = st.columns([1, 1, 4])
    cols[0].download_button("CSV", csv, file_name=f"{name}.csv", mime="text/csv", key=f"{key}_csv",
                            icon=":material/download:", help=f"Download this table as {name}.csv")
    cols[1].download_button("JSON", data, file_name=f"{name}.json", mime="application/json", key=f"{key}_json",
                            icon=":material/download:", help=f"Download this table as {name}.json")
