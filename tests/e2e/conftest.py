"""The dashboard served by `streamlit run app.py` on a free port, with a temporary data folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT, AppServer, start_app, wait_healthy

ARTIFACTS = ROOT / "test-artifacts" / "e2e"


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Iterator[AppServer]:
    home = tmp_path_factory.mktemp("sentinel-home")
    server = start_app(home, ARTIFACTS / "streamlit.log")
    try:
        wait_healthy(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
