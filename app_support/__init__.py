"""Streamlit helpers next to the pages: session state glue and the widgets several pages draw."""
