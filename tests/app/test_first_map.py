"""A new session's first head map comes from the disk cache before torch loads, and only when it is the right map."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from streamlit.testing.v1 import AppTest

from sentinel.charts import METRICS
from sentinel.metrics.scores import HeadScores
from sentinel.models import load_model
from sentinel.models.bundled import BUNDLED_MODEL_ENV
from sentinel.ui.analysis import HeadMaps, pasted_text
from sentinel.ui.maps_cache import first_visit_key, first_visit_map, save_cached_maps
from sentinel.ui.session import WorkingModel
from sentinel.ui.state import DashboardState, ModelChoice, disk_maps_key
from tests.app.conftest import APP, TIMEOUT, assert_clean

ROOT = APP.rsplit("/", 1)[0]


@pytest.fixture
def bundled_copy(tmp_path, monkeypatch, tiny_lm_dir):
    """A private copy of the tiny model as the bundled model, with its own data folder."""
    folder = tmp_path / "bundled"
    shutil.copytree(tiny_lm_dir, folder)
    monkeypatch.setenv(BUNDLED_MODEL_ENV, str(folder))
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "home"))
    return folder


def fill_cache(key: str, values: list[list[float]], metric: str = "entropy_normalized") -> None:
    scores = HeadScores(metric, torch.tensor(values, dtype=torch.float64))
    save_cached_maps(key, HeadMaps({metric: scores}, 0, "bundled:validation", 1024, 0.1))


def test_the_first_visit_key_is_the_key_a_new_session_computes(bundled_copy):
    working = WorkingModel(load_model(None, device="cpu"))
    assert first_visit_key() == disk_maps_key(DashboardState(), working) is not None
    other_text = DashboardState(text=pasted_text("Once upon a time. " * 40))
    other_device = DashboardState(choice=ModelChoice(device="cpu"))
    assert first_visit_key() not in {disk_maps_key(other_text, working), disk_maps_key(other_device, working)}


def test_a_changed_model_text_or_metric_is_a_cache_miss(bundled_copy, tmp_path, monkeypatch, tiny_lm_dir):
    values = [[0.25, 0.5, 0.75, 1.0], [0.1, 0.2, 0.3, 0.4]]
    fill_cache(first_visit_key(), values)
    found = first_visit_map("entropy_normalized")
    assert found.values == values and found.tokens == 1024
    assert first_visit_map("magnitude") is None                        # never computed: nothing drawn early
    other = tmp_path / "other"                                         # another model folder as the bundled one
    shutil.copytree(tiny_lm_dir, other)
    monkeypatch.setenv(BUNDLED_MODEL_ENV, str(other))
    assert first_visit_map("entropy_normalized") is None
    monkeypatch.setenv(BUNDLED_MODEL_ENV, str(bundled_copy))
    config = bundled_copy / "config.json"                              # the same folder, its files changed
    config.write_text(json.dumps({**json.loads(config.read_text()), "sentinel_note": 1}))
    assert first_visit_map("entropy_normalized") is None
    fill_cache(first_visit_key(), [[0.5, math.nan, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4]])
    assert first_visit_map("entropy_normalized") is None               # a pruned head: the full path draws it


def test_the_light_path_imports_no_torch():
    code = ("import sys, app_support.first_map, sentinel.ui.maps_cache\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'safetensors'))\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def first_map_script() -> None:
    import streamlit as st

    from app_support.first_map import draw_cached_first_map

    st.session_state["drawn_early"] = draw_cached_first_map(st.empty())


def test_only_a_new_session_on_the_default_map_draws_early(bundled_copy):
    fill_cache(first_visit_key(), [[0.25, 0.5, 0.75, 1.0], [0.1, 0.2, 0.3, 0.4]])
    at = AppTest.from_function(first_map_script, default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert at.session_state["drawn_early"] is True
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert spec["title"] == METRICS["entropy_normalized"].label                 # the map a new session shows
    restored = AppTest.from_function(first_map_script, default_timeout=TIMEOUT)
    restored.query_params["s"] = "anything"                 # a page address to restore: its own model and steps
    assert restored.run().session_state["drawn_early"] is False
    other_metric = AppTest.from_function(first_map_script, default_timeout=TIMEOUT)
    other_metric.session_state["map_metric"] = "magnitude"
    assert other_metric.run().session_state["drawn_early"] is False


def test_the_maps_page_opened_first_ends_with_one_interactive_map(bundled_copy):
    from app_support.state import shared_base_model

    shared_base_model.clear()                              # the bundled model is this test's tiny copy
    working = WorkingModel(load_model(None, device="cpu"))
    layers, heads = working.base.layout.num_layers, working.base.layout.num_heads
    values = [[0.5 + 0.01 * (layer * heads + head) for head in range(heads)] for layer in range(layers)]
    fill_cache(first_visit_key(), values)
    try:
        at = AppTest.from_file(f"{ROOT}/app_pages/head_maps.py", default_timeout=TIMEOUT).run()
        assert_clean(at)
        charts = [c for c in at.get("vega_lite_chart") if c.key == "head_map_chart"]
        assert len(charts) == 1                            # the early map was replaced, not drawn twice
        shown = at.session_state["sentinel_dashboard"].caches["maps"][1].scores["entropy_normalized"].values
        assert shown.tolist() == values                    # the cached scores, not computed again
    finally:
        shared_base_model.clear()
