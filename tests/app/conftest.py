"""AppTest helpers: the dashboard run in-process on the bundled model, with its data folder in a temp dir."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 180


@pytest.fixture(scope="session", autouse=True)
def app_home(tmp_path_factory) -> Iterator[Path]:
    """One data folder (store, saved models, job outputs) for every dashboard session of the test run."""
    import streamlit as st

    import torch

    home = tmp_path_factory.mktemp("sentinel-home")
    previous = os.environ.get("SENTINEL_HOME")
    os.environ["SENTINEL_HOME"] = str(home)
    # The app sets torch's thread count for its process; here that process is pytest: keep it as it is.
    os.environ.setdefault("SENTINEL_TORCH_THREADS", str(torch.get_num_threads()))
    st.cache_resource.clear()          # the store and job manager are created under this folder
    yield home
    from app_support.state import shared_jobs

    shared_jobs().shutdown(cancel=True, wait=True, timeout=60)
    st.cache_resource.clear()
    if previous is None:
        os.environ.pop("SENTINEL_HOME", None)
    else:
        os.environ["SENTINEL_HOME"] = previous


def open_app(page: str | None = None, query: dict[str, str] | None = None) -> AppTest:
    """A fresh browser session on the dashboard (optionally on one page, with URL query parameters)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    at.run()
    if page is not None:
        at.switch_page(f"app_pages/{page}.py").run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    """No uncaught exception on the page (expected errors are st.error messages instead)."""
    assert not at.exception, [e.value for e in at.exception]


def dashboard(at: AppTest):
    return at.session_state["sentinel_dashboard"]


def wait_for(at: AppTest, done: Callable[[AppTest], bool], timeout: float = 240.0) -> AppTest:
    """Rerun the page (as the fragment's timer would) until `done` holds."""
    deadline = time.monotonic() + timeout
    while not done(at):
        assert time.monotonic() < deadline, "timed out waiting for the dashboard"
        time.sleep(0.5)
        at.run()
        assert_clean(at)
    return at


def url_of(at: AppTest) -> dict[str, str]:
    """The query parameters the session's page address carries now (what a reload or a bookmark reopens)."""
    return {key: value if isinstance(value, str) else value[-1] for key, value in at.query_params.items()}


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]
