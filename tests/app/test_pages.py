"""Every dashboard page on the bundled model, through Streamlit's AppTest (no browser)."""

from __future__ import annotations

import math

import pytest
import torch

from sentinel.evaluation.size import parameter_count
from sentinel.metrics import weight_magnitude
from sentinel.models import load_model
from sentinel.pruning import active_heads
from sentinel.ui.analysis import WHOLE_MODEL_PREDICTION
from sentinel.ui.choices import MAP_SAMPLES, MAP_SEQ_LEN
from tests.app.conftest import assert_clean, dashboard, errors, open_app, wait_for

# The bundled demo model: GPT-2, 6 layers x 8 heads of 32 dims (n_embd 256). One head of GPT-2 holds
# 3 x 32 x 256 Q/K/V weights + 3 x 32 biases + 32 x 256 output-projection weights = 32,864 parameters.
LAYERS, HEADS, PER_HEAD = 6, 8, 3 * 32 * 256 + 3 * 32 + 32 * 256


@pytest.fixture(scope="module")
def bundled():
    return load_model(None)


def test_model_page_loads_the_bundled_model(bundled):
    at = open_app()
    at.button(key="model_load").click().run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Architecture"] == "gpt2 (gpt2)"
    assert metrics["Layers × heads"] == f"{LAYERS} × {HEADS}"
    assert metrics["Active heads (as loaded)"] == "48 / 48"
    count = parameter_count(bundled.model)
    assert metrics["Parameters"] == f"{count / 1e6:.2f} M"
    assert metrics["Device"] == "cpu"


def test_head_maps_are_computed_on_the_session_model(bundled, monkeypatch):
    # without the disk cache (earlier tests fill it with more metrics), the first map computes only what it shows
    monkeypatch.setattr("app_support.state.load_cached_maps", lambda key, version: None)
    at = open_app("head_maps")
    maps = dashboard(at).caches["maps"][1]
    assert set(maps.scores) == {"entropy", "entropy_normalized"}       # what the first map shows, nothing more
    normalized = maps.scores["entropy_normalized"].values
    assert normalized.shape == (LAYERS, HEADS) and bool(((normalized >= 0) & (normalized <= 1)).all())
    assert maps.tokens == MAP_SAMPLES * MAP_SEQ_LEN                  # the same default sampling as the CLI
    assert [c.key for c in at.get("vega_lite_chart")][:1] == ["head_map_chart"]   # the map, then inside a head
    captions = " ".join(c.value for c in at.caption)
    assert "Near 1: the head looks at every visible word" in captions       # the plain-language legend
    at.segmented_control(key="map_metric").set_value("magnitude").run()
    assert_clean(at)
    assert "High: the head has large weights" in " ".join(c.value for c in at.caption)
    assert torch.equal(maps.scores["magnitude"].values, weight_magnitude(bundled.model).values)
    at.segmented_control(key="map_metric").set_value("gradient").run()
    assert_clean(at)
    assert bool((maps.scores["gradient"].values > 0).all())
    csv = at.get("download_button")[0]
    assert csv.proto.label == "Download the scores computed so far (CSV)" and csv.proto.url.endswith(".csv")
    table = maps.frame()
    assert len(table) == LAYERS * HEADS
    assert list(table.columns) == ["layer", "head", "pruned", "entropy", "entropy_normalized", "magnitude",
                                   "gradient"]


def test_prune_30_percent_by_strategy(bundled):
    at = open_app("prune")
    before = dashboard(at).caches["maps"][1].scores["entropy"].values.clone()
    at.button(key="prune_go").click().run()          # defaults: entropy strategy, 30%, mask, min_heads 1
    assert_clean(at)
    working = dashboard(at).working
    # 30% of 48 heads = 14.4 -> 14: the 14 highest-entropy heads, skipping any that would leave its layer
    # without a head (min_heads=1).
    order = sorted(((before[layer, head].item(), layer, head) for layer in range(LAYERS) for head in range(HEADS)),
                   reverse=True)
    expected, left = set(), {layer: HEADS for layer in range(LAYERS)}
    for _, layer, head in order:
        if len(expected) < 14 and left[layer] > 1:
            expected.add((layer, head))
            left[layer] -= 1
    assert set(working.status()) == expected
    assert set(working.status().values()) == {"masked"}
    table = at.table[0].value
    assert table.loc["Active heads"].tolist() == ["48 of 48", "34 of 48", "14 of 48 heads pruned = 29%"]
    assert float(table.loc["Perplexity", "After"]) > 0          # a measured perplexity, not a placeholder
    assert table.loc[WHOLE_MODEL_PREDICTION, "After"] == "none: masked units still compute"
    assert active_heads(bundled.model) == {layer: list(range(HEADS)) for layer in range(LAYERS)}
    at.button(key="prune_undo").click().run()
    assert dashboard(at).working.steps == [] and dashboard(at).working.status() == {}


def test_prune_a_selection_by_removal():
    at = open_app("prune")
    at.radio(key="prune_how").set_value("selection").run()
    at.radio(key="prune_mode").set_value("remove").run()
    at.multiselect(key="selected_heads_list").set_value(["L0 H1", "L3 H5"]).run()
    assert dashboard(at).selection.heads == ((0, 1), (3, 5))
    at.button(key="prune_go").click().run()
    assert_clean(at)
    working = dashboard(at).working
    assert working.status() == {(0, 1): "removed", (3, 5): "removed"}
    assert parameter_count(working.base.model) - parameter_count(working.model) == 2 * PER_HEAD
    assert dashboard(at).selection.heads == ()
    table = at.table[0].value
    assert table.loc["Active heads"].tolist()[:2] == ["48 of 48", "46 of 48"]
    assert table.loc["Parameters", "Change"].startswith(f"{-2 * PER_HEAD:+,} (")
    assert "interleaved pairs" in table.loc["Prefill speed measured", "After"]
    assert float(table.loc[WHOLE_MODEL_PREDICTION, "After"].split("×")[0]) > 1.0
    sample = [h.proto.body for h in at.get("html")]
    assert any("sample-after" in body for body in sample)


def test_sessions_prune_their_own_copies(bundled):
    one, two = open_app("prune"), open_app("prune")
    one.button(key="prune_go").click().run()
    assert len(dashboard(one).working.status()) == 14
    two.run()
    assert dashboard(two).working.status() == {}
    assert dashboard(two).working.model is not dashboard(one).working.model
    assert dashboard(two).working.base is dashboard(one).working.base        # one base model per process
    assert active_heads(dashboard(two).working.base.model) == {layer: list(range(HEADS)) for layer in range(LAYERS)}


# --- errors: readable messages, the app keeps running, the session keeps its state ---------------------------

def test_a_model_that_cannot_be_loaded(app_home):
    at = open_app("prune")
    at.button(key="prune_go").click().run()
    at.switch_page("app_pages/model.py").run()
    at.radio(key="model_kind").set_value("folder").run()
    at.text_input(key="model_folder").set_value("/nonexistent/model").run()
    at.button(key="model_load").click().run()
    assert_clean(at)
    [outside] = errors(at)
    assert outside.startswith("Could not finish loading the model: Only model folders under this app's model folders")
    assert len(dashboard(at).working.status()) == 14       # the pruned session model is still there
    # a folder that exists outside the allowed roots gets the very same message: the field cannot probe the disk
    at.text_input(key="model_folder").set_value("/etc").run()
    at.button(key="model_load").click().run()
    assert errors(at) == [outside]
    # inside the data folder, a missing model is named as such
    at.text_input(key="model_folder").set_value(str(app_home / "no-such-model")).run()
    at.button(key="model_load").click().run()
    assert errors(at) == ["Could not finish loading the model: No model folder at <data folder>/no-such-model; "
                          "check the path."]


def test_saving_over_a_saved_model_asks_first(app_home):
    at = open_app("prune")
    at.text_input(key="save_name").set_value("asks-first").run()
    at.button(key="save_go").click().run()
    assert_clean(at)
    assert (app_home / "models" / "asks-first" / "config.json").is_file()
    at.run()
    assert at.button(key="save_go").disabled and not at.checkbox(key="save_replace").value
    at.checkbox(key="save_replace").check().run()
    assert not at.button(key="save_go").disabled
    at.button(key="save_go").click().run()
    assert_clean(at)
    assert not errors(at)


def test_a_ratio_that_breaks_min_heads():
    at = open_app("prune")
    at.number_input(key="prune_min_heads").set_value(7).run()
    assert_clean(at)
    # 14 heads wanted, but keeping 7 of 8 per layer leaves one head per layer: 6 in all. The preview says so
    # before anything is pressed, and Prune is off until the settings can be met.
    assert at.button(key="prune_go").disabled
    assert errors(at) == ["Could not finish previewing the strategy's choice: Ratio 0.3 asks for 14 heads of 48 in the model, but keeping "
                          "min_heads=7 per layer allows only 6. Lower the ratio or min_heads."]
    assert dashboard(at).working.steps == []


@pytest.mark.parametrize("name, data, message", [
    ("empty.txt", b"  \n ", "empty.txt is empty; give a file that contains text."),
    ("blob.txt", b"\x00\x01\x02binary", "blob.txt contains NUL bytes, so it is binary, not text"),
])
def test_an_empty_or_binary_upload(name, data, message):
    at = open_app("head_maps")
    at.radio(key="text_kind").set_value("uploaded").run()
    at.file_uploader(key="text_upload").upload(name, data, "text/plain")
    at.run()
    at.button(key="text_apply").click().run()
    assert_clean(at)
    assert len(errors(at)) == 1 and message in errors(at)[0]
    assert errors(at)[0].startswith("Could not finish reading the sample text:")
    assert dashboard(at).text.kind == "bundled"
    assert "maps" in dashboard(at).caches


def test_out_of_memory_while_computing_maps(monkeypatch):
    at = open_app("prune")
    at.button(key="prune_go").click().run()

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("sentinel.ui.analysis.compute_scores", no_memory)
    monkeypatch.setattr("app_support.state.load_cached_maps", lambda key, version: None)   # no disk cache
    at.switch_page("app_pages/head_maps.py").run()
    dashboard(at).caches.pop("maps")
    at.run()
    assert_clean(at)
    assert errors(at) == ["The device ran out of memory while computing the head maps. Try a shorter sample text "
                          "or fewer samples, close other sessions' jobs, choose the CPU device, or load a smaller "
                          "model."]
    assert len(dashboard(at).working.status()) == 14
    monkeypatch.undo()
    at.run()
    assert_clean(at)
    assert not errors(at) and "maps" in dashboard(at).caches


def test_a_failed_job(monkeypatch):
    def broken(params, ctx):
        raise RuntimeError("the training data vanished")

    monkeypatch.setitem(__import__("sentinel.jobs", fromlist=["JOB_KINDS"]).JOB_KINDS, "dashboard-finetune", broken)
    at = open_app("finetune")
    at.number_input(key="finetune_steps").set_value(2)
    at.button(key="FormSubmitter:finetune_settings-Start fine-tuning").click().run()
    assert_clean(at)
    wait_for(at, lambda a: bool(errors(a)))
    assert errors(at) == ["The fine-tuning job failed: RuntimeError: the training data vanished"]
    assert dashboard(at).working is not None and dashboard(at).tuned is None
    assert not math.isnan(at.progress[0].value)


def test_a_corrupt_store_is_a_plain_message(monkeypatch, tmp_path):
    from sentinel.store import Store
    from app_support import state as app_state

    garbage = tmp_path / "sentinel.db"
    garbage.write_bytes(b"not a database " * 100)
    monkeypatch.setattr(app_state, "shared_store", lambda: Store(garbage))
    at = open_app("experiments")
    assert_clean(at)
    [message] = errors(at)
    assert message.startswith("Could not finish reading the experiment store: The store") and "corrupt" in message
    assert "Traceback" not in message
