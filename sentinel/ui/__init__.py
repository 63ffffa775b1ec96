"""Dashboard helpers: Altair chart builders and pure functions the Streamlit pages call (testable without Streamlit)."""
