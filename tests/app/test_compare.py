"""Compare: any session or saved model, up to four side by side — text, the one protocol's perplexity, size and
interleaved speed; a broken saved model is named and the page keeps working."""

from __future__ import annotations

import html
import re
import shutil
import time
from pathlib import Path

import pytest

from sentinel.demo.prompts import default_prompts
from app_support.state import shared_store
from sentinel.evaluation.paired import InterleavedSpeed
from sentinel.evaluation.size import parameter_count
from sentinel.generation import generate_text
from sentinel.models import BUNDLED_MODEL_DIR, load_model, save_model
from sentinel.pruning import remove_heads
from sentinel.ui.compare import NOT_STORED, NOT_STORED_HELP
from sentinel.ui.format import human_count
from sentinel.ui.history import readable
from sentinel.ui.library import models_dir
from sentinel.ui.protocol import protocol_perplexity
from tests.app.conftest import assert_clean, dashboard, errors, open_app, url_of, wait_for

SAVED, BROKEN, OTHER = "cmp-saved", "cmp-broken", "cmp-other"


@pytest.fixture(scope="module")
def library(app_home):
    """A head-removed bundled model saved in the library, a second copy, and a folder with a config but no
    weights; returns the saved model as loaded from disk."""
    loaded = load_model(None)
    remove_heads(loaded.model, {0: [0, 1], 3: [2]})
    save_model(loaded.model, loaded.tokenizer, models_dir() / SAVED)
    save_model(loaded.model, loaded.tokenizer, models_dir() / OTHER)
    (models_dir() / BROKEN).mkdir(parents=True)
    shutil.copy(BUNDLED_MODEL_DIR / "config.json", models_dir() / BROKEN / "config.json")
    yield load_model(str(models_dir() / SAVED))
    for name in (SAVED, OTHER, BROKEN):
        shutil.rmtree(models_dir() / name)


def bodies(at) -> dict[str, str]:
    """Column key → its generated text as shown (the prompt in bold stripped)."""
    found = {}
    for element in at.get("html"):
        match = re.search(r"id='compare-(\w+)'", element.proto.body)
        if match:
            text = element.proto.body.split("</b>", 1)[1]
            found[match.group(1)] = html.unescape(re.sub(r"<[^>]+>", "", text)).strip()
    return found


def test_base_pruned_and_a_saved_model_side_by_side(library, monkeypatch):
    import app_support.compare as glue

    loads: list[str] = []
    real_load = glue.load_model

    def counting_load(path, **kwargs):
        loads.append(path)
        return real_load(path, **kwargs)

    glue.library_model.clear()
    monkeypatch.setattr(glue, "load_model", counting_load)
    at = open_app("prune")
    at.button(key="prune_go").click().run()                  # entropy 30%: heads masked
    table = at.table[0].value
    before, after = table.loc["Perplexity", "Before"], table.loc["Perplexity", "After"]
    at.switch_page("app_pages/compare.py").run()
    assert_clean(at)
    picker = at.multiselect(key="compare_models")
    assert picker.value == ["base", "pruned"]                  # today's columns by default
    assert {"Base model", "Pruned", f"{SAVED} (saved)", f"{BROKEN} (saved)"} <= set(picker.options)
    saved_key = f"saved_{SAVED.replace('-', '_')}"
    picker.set_value(["base", "pruned", saved_key]).run()
    at.button(key="compare_go").click().run()
    assert_clean(at)
    assert not errors(at)
    shown = bodies(at)
    assert list(shown) == ["base", "pruned", saved_key]
    state = dashboard(at)
    prompt = default_prompts()[0]
    assert shown[saved_key] == generate_text(library.model, library.tokenizer, prompt, 40, greedy=True).text.strip()
    assert shown["pruned"] == generate_text(state.working.model, state.working.tokenizer, prompt, 40,
                                            greedy=True).text.strip()
    ppl = [m.value for m in at.metric if m.label == "Perplexity"]
    expected_saved = protocol_perplexity(library.model, library.tokenizer).perplexity
    assert ppl == [before, after, readable(expected_saved)]       # the Prune page's numbers for the same models
    params = [m.value for m in at.metric if m.label == "Parameters"]
    assert params == [human_count(parameter_count(state.working.base.model)),
                      human_count(parameter_count(state.working.model)), human_count(parameter_count(library.model))]
    assert sum(m.label == "Weights as stored" for m in at.metric) == 3

    at.button(key="compare_speed").click().run()             # a background job (review #10)
    assert_clean(at)
    job_id = dashboard(at).caches["compare-speed-job"]
    job = shared_store().get_job(job_id)
    assert job.kind == "compare-speed" and [m["key"] for m in job.params["models"]] == ["base", "pruned", saved_key]
    copies = [Path(m["path"]) for m in job.params["models"] if m["copy"]] + [Path(p) for p in job.params["input_copies"]]
    assert [p.name for p in copies[:2]] == ["base", "pruned"]   # the session's models saved for the job...
    assert copies[2] == copies[0].parent                        # ...in the job's own folder, removed as a whole
    assert job.params["models"][2]["path"] == str(models_dir() / SAVED)      # ...the library's read in place
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    at.run()
    assert_clean(at)
    job = shared_store().get_job(job_id)
    assert job.state == "succeeded", job.error
    assert not any(p.exists() for p in copies) and (models_dir() / SAVED).is_dir()   # copies gone, library kept
    speed = at.table[0].value
    assert list(speed.index) == ["Base model", "Pruned", f"{SAVED} (saved)"]
    assert speed.loc["Base model", "Prefill vs. first"] == "reference"
    verdicts = (r"(no measurable difference|faster|slower|too noisy to conclude — rerun on a quieter machine"
                r"|no difference expected: the same shapes as the reference.*) \(.*5 interleaved pairs\)")
    assert all(re.search(verdicts, value)
               for value in speed.iloc[1:][["Prefill vs. first", "Generation vs. first"]].values.ravel())
    timed = InterleavedSpeed.from_dict(job.result["speed"])
    assert speed.loc["Pruned", "Prefill vs. first"] == timed.ratio("pruned", "prefill").describe()
    assert loads == [str(models_dir() / SAVED)]                 # loaded once, then cached across reruns
    again = open_app("compare", query=url_of(at))              # a reload finds the measurement again
    again.multiselect(key="compare_models").set_value(["base", "pruned", saved_key]).run()
    assert_clean(again)
    assert again.table and again.table[0].value.equals(speed)


def test_measuring_speed_can_be_cancelled(library, monkeypatch):
    """The timing job stops at its next run when Cancel is pressed; its copies are removed all the same."""
    import sentinel.ui.compare as compare_module

    real_speed = compare_module.interleaved_speed

    def until_cancelled(models, **kwargs):
        """Times nothing until the page's Cancel reaches the job (no timing race), then lets the job stop."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            kwargs["on_run"](0, 1, next(iter(models)))              # raises JobCancelled once cancelled
            time.sleep(0.05)
        return real_speed(models, **kwargs)

    monkeypatch.setattr(compare_module, "interleaved_speed", until_cancelled)
    at = open_app("compare")
    at.button(key="compare_speed").click().run()
    job_id = dashboard(at).caches["compare-speed-job"]
    copies = [Path(p) for p in shared_store().get_job(job_id).params["input_copies"]]
    assert at.button(key="compare_speed").disabled                # one timing at a time for these models
    at.button(key="compare_speed_cancel").click().run()
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    at.run()
    assert_clean(at)
    assert shared_store().get_job(job_id).state == "cancelled"
    assert any("speed measurement was cancelled" in i.value for i in at.info)
    assert copies and not any(p.exists() for p in copies)


def test_a_fifth_model_is_refused(library):
    at = open_app("compare")
    keys = ["base", "pruned"] + [f"saved_{name.replace('-', '_')}" for name in (SAVED, OTHER, BROKEN)]
    at.multiselect(key="compare_models").set_value(keys).run()
    assert_clean(at)
    assert any("at most 4 models side by side; 5 were chosen" in w.value for w in at.warning)
    assert at.multiselect(key="compare_models").value == keys[:4]


def test_a_broken_saved_model_is_named_and_the_page_keeps_working(library):
    at = open_app("compare")
    broken = f"saved_{BROKEN.replace('-', '_')}"
    at.multiselect(key="compare_models").set_value(["base", broken]).run()
    assert_clean(at)
    assert any(f"loading the model '{BROKEN} (saved)'" in e and "no weights file" in e for e in errors(at))
    at.button(key="compare_go").click().run()
    assert_clean(at)
    assert list(bodies(at)) == ["base"]
    assert [m.label for m in at.metric][:1] == ["Perplexity"]


def test_the_weights_pages_sparse_copy_is_a_choice_with_its_zeros_counted():
    at = open_app("weights")
    at.selectbox(key="weights_method").set_value("l1").run()
    at.button(key="weights_go").click().run()
    assert_clean(at)
    sparse = dashboard(at).caches["sparse-latest"][1]
    weights_ppl = dashboard(at).caches[("ppl-sparse", dashboard(at).caches["sparse-latest"][0])].perplexity
    at.switch_page("app_pages/compare.py").run()
    assert "Sparse copy (Weights page)" in at.multiselect(key="compare_models").options
    at.multiselect(key="compare_models").set_value(["base", "sparse"]).run()
    at.button(key="compare_go").click().run()
    assert_clean(at)
    assert list(bodies(at)) == ["base", "sparse"]
    assert [m.value for m in at.metric if m.label == "Perplexity"][1] == readable(weights_ppl)
    nonzero = [m.value for m in at.metric if m.label == "Non-zero parameters"]
    stats = sparse.result.stats
    assert nonzero[1] == f"{human_count(stats.nonzero_parameters)} " \
                         f"({stats.nonzero_parameters / stats.total_parameters:.0%})"
    assert nonzero[0].endswith("(100%)")
    stored = [m for m in at.metric if m.label == "Weights as stored"]
    assert [m.value for m in stored] == [NOT_STORED] * 2
    assert all(m.proto.help == NOT_STORED_HELP for m in stored)        # the detail, where the value has no room


def test_a_model_saved_on_weights_is_stored_as_its_one_weight_file_with_the_bitmask_copy_apart():
    """Review #3: a Weights save holds model.safetensors and the bitmask copy; Compare counts the file the model
    loads from as 'Weights as stored' and shows the compressed file as its own row, never the sum of both."""
    from sentinel.sparsity.storage import COMPRESSED_FILE
    from sentinel.ui.format import human_bytes
    from sentinel.ui.library import model_folder_for

    name = "cmp-weights-save"
    at = open_app("weights")
    at.selectbox(key="weights_method").set_value("l1").run()
    at.button(key="weights_go").click().run()
    at.text_input(key="weights_save_name").set_value(name).run()
    at.button(key="weights_save").click().run()
    assert_clean(at)
    folder = model_folder_for(name)
    try:
        dense_file, packed = (folder / "model.safetensors").stat().st_size, (folder / COMPRESSED_FILE).stat().st_size
        at.switch_page("app_pages/compare.py").run()
        key = f"saved_{name.replace('-', '_')}"
        at.multiselect(key="compare_models").set_value(["base", key]).run()
        at.button(key="compare_go").click().run()
        assert_clean(at)
        assert list(bodies(at)) == ["base", key]
        stored = [m.value for m in at.metric if m.label == "Weights as stored"]
        assert stored == [NOT_STORED, human_bytes(dense_file)]
        assert [m.value for m in at.metric if m.label == "Bitmask-compressed file"] == [human_bytes(packed)]
        dense = [m.value for m in at.metric if m.label == "Weights, dense"]
        assert dense[0] == dense[1]                       # same shapes: the saved sparse model is not 'bigger'
    finally:
        shutil.rmtree(folder)
