"""Weights page: sparsify a copy, see per-layer sparsity and sizes, and the honest speed sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app_support.state import shared_store
from sentinel.models import load_model
from sentinel.models.int8 import is_int8
from sentinel.evaluation.paired import InterleavedSpeed, ModelTimings
from sentinel.sparsity.masks import SPARSEGPT_COLUMN_BLOCK, SPARSEGPT_DAMPENING, SparsityConfig
from sentinel.sparsity.storage import COMPRESSED_FILE
from sentinel.ui.format import human_bytes
from sentinel.ui.history import readable
from sentinel.ui.library import model_folder_for, saved_models
from sentinel.ui.weights import NO_SPEEDUP, SPARSIFY_KIND, speed_sentence
from sentinel.ui.weights_sensitivity import sensitivity_of
from tests.app.conftest import assert_clean, dashboard, errors, open_app, url_of, wait_for


def measure_speed(at) -> None:
    """Press Measure speed and wait for its background job (kind weights-speed) to finish."""
    at.button(key="weights_speed").click().run()
    assert_clean(at)
    job_id = dashboard(at).caches["weights-speed-job"]
    assert shared_store().get_job(job_id).kind == "weights-speed"
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    at.run()
    assert_clean(at)
    assert shared_store().get_job(job_id).state == "succeeded", shared_store().get_job(job_id).error


def test_the_weights_page_sparsifies_a_copy_and_reports_sizes():
    at = open_app("weights")
    at.selectbox(key="weights_method").set_value("l1").run()
    at.button(key="weights_go").click().run()
    assert_clean(at)
    state = dashboard(at)
    assert not state.working.steps                                        # the session's model is untouched
    assert any(m.value.startswith("**50.0%** of the targeted weights are zero") for m in at.markdown)
    table = at.table[0].value
    dense, sparse = (int(v.replace(",", "")) for v in table.loc["Non-zero parameters"])
    assert sparse < dense
    assert any("Perplexity: your model" in m.value for m in at.markdown)
    measure_speed(at)
    assert any(m.value.startswith("Measured: prefill ") for m in at.markdown)
    at.radio(key="weights_pattern").set_value("2:4").run()
    at.button(key="weights_go").click().run()
    assert_clean(at)
    assert any(m.value.startswith("**50.0%** of the targeted weights are zero") for m in at.markdown)


def _speed(*ratios: float) -> InterleavedSpeed:
    """Dense at 100/50 tokens/s every round; the sparse copy at those times each round's ratio."""
    rounds = len(ratios)
    return InterleavedSpeed((ModelTimings("dense", (100.0,) * rounds, (50.0,) * rounds),
                             ModelTimings("sparse", tuple(100.0 * r for r in ratios), tuple(50.0 * r for r in ratios))),
                            rounds, 64, 16, 1)


def test_the_speed_sentence_says_when_unstructured_zeros_bought_nothing():
    plain = speed_sentence(_speed(0.95, 1.0, 1.08), None)              # the rounds disagree: covers 1.0
    assert NO_SPEEDUP in plain
    assert plain.startswith("Measured: prefill no measurable difference (0.95–1.08×, 3 interleaved pairs), "
                            "decode no measurable difference (0.95–1.08×")
    faster = speed_sentence(_speed(1.4, 1.5, 1.6), None)
    assert NO_SPEEDUP not in faster
    assert faster.startswith("Measured: prefill 1.50× faster (1.40–1.60×, 3 interleaved pairs), decode 1.50× faster")
    assert NO_SPEEDUP not in speed_sentence(_speed(0.95, 1.0, 1.08), "2:4")
    # a ratio of medians above 1 whose per-round range covers 1.0 is not 'faster' (the one rule, review #5)
    assert NO_SPEEDUP in speed_sentence(_speed(0.9, 1.2, 1.3), None)


def test_a_gradual_schedule_ramps_the_zeros_while_training_in_the_background():
    at = open_app("weights")
    at.selectbox(key="weights_method").set_value("l1")
    at.radio(key="weights_schedule").set_value("gradual").run()
    at.number_input(key="weights_steps").set_value(4).run()
    at.button(key="weights_go").click().run()
    assert_clean(at)
    job_id = dashboard(at).gradual_job_id
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running")
             and "sparse-latest" in dashboard(a).caches)
    job = shared_store().get_job(job_id)
    assert job.state == "succeeded"
    assert not Path(job.params["model"]).exists() and Path(job.result["model"]).is_dir()   # start gone, result kept
    sparse = dashboard(at).caches["sparse-latest"][1]
    scheduled = [target for _, target, _ in sparse.history]
    assert scheduled == sorted(scheduled) and scheduled[0] == 0.0 and scheduled[-1] == 0.5   # the cubic ramp
    assert sparse.finetune["steps"] == 4
    assert abs(sparse.result.stats.sparsity - 0.5) < 0.01
    assert any("of gradual pruning and training" in m.value for m in at.markdown)
    store_runs = [r for r in shared_store().list_experiments(kind=SPARSIFY_KIND)
                  if r.name == "magnitude 50% unstructured gradual 4 steps sparsify"]
    assert store_runs and store_runs[0].summary["schedule_history"]
    reloaded = open_app("weights", query=url_of(at))                     # F5: the run and its settings come back
    assert reloaded.radio(key="weights_schedule").value == "gradual"
    assert reloaded.selectbox(key="weights_method").value == "l1"
    assert any("of gradual pruning and training" in m.value for m in reloaded.markdown)
    assert not reloaded.warning
    reloaded.radio(key="weights_pattern").set_value("2:4").run()         # gradual ramps unstructured zeros only
    reloaded.button(key="weights_go").click().run()
    assert any("choose one-shot for 2:4" in e for e in errors(reloaded))


def test_a_gradual_run_can_be_cancelled():
    at = open_app("weights")
    at.selectbox(key="weights_method").set_value("l1")
    at.radio(key="weights_schedule").set_value("gradual").run()
    at.number_input(key="weights_steps").set_value(500).run()
    at.button(key="weights_go").click().run()
    job_id = dashboard(at).gradual_job_id
    at.button(key="weights_gradual_cancel").click().run()
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    assert shared_store().get_job(job_id).state == "cancelled"
    assert any("The gradual run cancelled" in w.value for w in at.warning)
    assert not Path(shared_store().get_job(job_id).params["model"]).exists()     # the start copy is removed


def test_prune_then_quantize_then_save_and_load_back():
    at = open_app("weights")
    at.selectbox(key="weights_method").set_value("l1")
    at.button(key="weights_go").click().run()
    at.toggle(key="weights_int8").set_value(True).run()
    assert_clean(at)
    table = at.table[0].value
    assert "int8 file (int8 weights + scales)" in table.index
    state = dashboard(at)
    key = state.caches["sparse-latest"][0]
    sizes = state.caches[("size-sparse", key)]
    int8_bytes = state.caches[("int8", key)].file_bytes
    assert int8_bytes < sizes.compressed_bytes < sizes.dense_bytes
    assert table.loc["int8 file (int8 weights + scales)", "Sparse"] == human_bytes(int8_bytes)
    int8_ppl = state.caches[("ppl-int8", key)].perplexity
    assert any(f"sparse int8 copy **{readable(int8_ppl)}**" in m.value for m in at.markdown)
    runs = shared_store().list_experiments(kind=SPARSIFY_KIND)
    names = {r.name: r for r in runs}
    assert names["magnitude 50% unstructured sparsify + int8"].summary["perplexity_after"] == int8_ppl
    at.toggle(key="weights_int8").set_value(False).run()
    assert "int8 file (int8 weights + scales)" not in at.table[0].value.index
    at.toggle(key="weights_int8").set_value(True).run()
    assert len(shared_store().list_experiments(kind=SPARSIFY_KIND)) == len(runs)      # recorded once, not per rerun
    measure_speed(at)
    assert any(m.value.startswith("Measured int8 (dynamic quantization, CPU): ") for m in at.markdown)

    at.text_input(key="weights_save_name").set_value("t-sparse").run()
    at.button(key="weights_save").click().run()
    assert_clean(at)
    assert at.success and "t-sparse-int8" in at.success[0].value
    listed = {p.name for p in saved_models()}
    assert {"t-sparse", "t-sparse-int8"} <= listed                      # what Model and Compare list
    sparse, quantized = state.caches["sparse-latest"][1].model, state.caches[("int8", key)].model
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    fp32 = load_model(str(model_folder_for("t-sparse")))
    int8 = load_model(str(model_folder_for("t-sparse-int8")))            # the normal loading path, both
    assert is_int8(int8.model) and not is_int8(fp32.model)
    with torch.no_grad():
        assert torch.equal(fp32.model(ids).logits, sparse(ids).logits)
        assert torch.equal(int8.model(ids).logits, quantized(ids).logits)
    assert (model_folder_for("t-sparse") / COMPRESSED_FILE).is_file()
    # the Model page opens the fp32 copy as a session model and explains why the int8 one is Compare-only
    page = open_app("model")
    page.radio(key="model_kind").set_value("saved").run()
    page.selectbox(key="model_saved").set_value(str(model_folder_for("t-sparse-int8"))).run()
    page.button(key="model_load").click().run()
    assert any("holds int8 weights" in e for e in errors(page))
    # saving again under the same name asks first
    at.run()
    assert any("already saved" in w.value for w in at.warning) and at.button(key="weights_save").disabled


def test_the_sensitivity_scan_runs_in_the_background_survives_reload_and_is_recorded():
    at = open_app("weights")
    at.multiselect(key="weights_sens_levels").set_value([0.5])
    at.select_slider(key="weights_sens_tokens").set_value(256).run()
    at.button(key="weights_sens_go").click().run()
    assert_clean(at)
    job_id = dashboard(at).sensitivity_job_id
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    job = shared_store().get_job(job_id)
    assert job.state == "succeeded", job.error
    assert not Path(job.params["model"]).exists()                       # the start copy is removed
    result = sensitivity_of(job.result)
    matrices = len({r.name for r in result.rows})
    assert len(result.rows) == matrices == 24                          # 6 blocks x 4 matrices, one level
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert len(at.dataframe[-1].value) == matrices
    reloaded = open_app("weights", query=url_of(at))                     # F5 brings the scan back
    assert dashboard(reloaded).sensitivity_job_id == job_id
    assert len(reloaded.dataframe[-1].value) == matrices
    assert not any(w.value.startswith("This sensitivity scan was made") for w in reloaded.warning)
    reloaded.switch_page("app_pages/prune.py").run()
    reloaded.button(key="prune_go").click().run()                        # pruned since: the scan is of before
    reloaded.switch_page("app_pages/weights.py").run()
    assert_clean(reloaded)
    assert any(w.value.startswith("This sensitivity scan was made on your model before step 1 (mask 14 heads")
               for w in reloaded.warning)
    record = shared_store().get_experiment(job.experiment_id)
    assert record.name == "sensitivity magnitude 6 layers at 50%" and record.status == "completed"
    assert record.summary["baseline_perplexity"] == result.baseline
    page = open_app("experiments")
    page.selectbox(key="experiments_pick").set_value(record.id).run()
    assert_clean(page)
    tables = [d.value for d in page.dataframe if "Δ ppl at 50%" in d.value.columns]
    assert len(tables) == 1 and len(tables[0]) == matrices


def test_a_sensitivity_scan_can_be_cancelled():
    at = open_app("weights")
    at.button(key="weights_sens_go").click().run()                     # the full protocol: slow enough to cancel
    job_id = dashboard(at).sensitivity_job_id
    at.button(key="weights_sens_cancel").click().run()
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    assert shared_store().get_job(job_id).state == "cancelled"
    assert any("The sensitivity scan cancelled" in w.value for w in at.warning)
    assert not Path(shared_store().get_job(job_id).params["model"]).exists()


def _sparsify_on_page(at, method: str):
    """Choose `method` at 2:4 on the page, press Sparsify and return (the sparse copy, its protocol perplexity)."""
    at.selectbox(key="weights_method").set_value(method).run()
    at.radio(key="weights_pattern").set_value("2:4").run()
    at.button(key="weights_go").click().run()
    assert_clean(at)
    assert not at.error, errors(at)
    key, sparse = dashboard(at).caches["sparse-latest"]
    return sparse, dashboard(at).caches[("ppl-sparse", key)].perplexity


@pytest.mark.slow
def test_sparsegpt_on_the_page_offers_only_its_scopes_passes_its_settings_and_beats_l1_at_2_4():
    at = open_app("weights")
    at.radio(key="weights_scope").set_value("global").run()
    assert "weights_dampening" not in [n.key for n in at.number_input]     # SparseGPT's settings: only for it
    at.selectbox(key="weights_method").set_value("sparsegpt").run()
    assert_clean(at)
    offered = at.radio(key="weights_scope").options
    assert "global" not in offered and at.radio(key="weights_scope").value == "layer"
    for scope in offered:                                                   # every scope offered is one it takes
        SparsityConfig("sparsegpt", 0.5, scope).validate()
    assert any("no global ranking" in c.value for c in at.caption)
    assert at.number_input(key="weights_dampening").value == SPARSEGPT_DAMPENING
    assert at.number_input(key="weights_column_block").value == SPARSEGPT_COLUMN_BLOCK

    l1, l1_ppl = _sparsify_on_page(at, "l1")                                # the same settings, the same protocol
    sparsegpt, sparsegpt_ppl = _sparsify_on_page(at, "sparsegpt")
    for copy in (l1, sparsegpt):
        assert abs(copy.result.stats.sparsity - 0.5) < 0.005
        assert all(abs(m.sparsity - 0.5) < 0.005 for m in copy.result.stats.matrices)
    assert any(m.value.startswith("**50.0%** of the targeted weights are zero") for m in at.markdown)
    assert sparsegpt_ppl <= l1_ppl, (sparsegpt_ppl, l1_ppl)                # the OBS update repairs what l1 breaks
    assert any(c.value.startswith("SparseGPT: dampening 0.01 × the Hessian's mean diagonal, column blocks of 128")
               for c in at.caption)

    at.number_input(key="weights_dampening").set_value(0.05)               # passed through to the library
    at.number_input(key="weights_column_block").set_value(66).run()         # not a multiple of 4: said, not raised
    at.button(key="weights_go").click().run()
    assert_clean(at)
    assert any("column block divisible by 4, got 66" in e for e in errors(at))
    at.number_input(key="weights_column_block").set_value(64).run()
    at.button(key="weights_go").click().run()
    assert_clean(at)
    config = dashboard(at).caches["sparse-latest"][1].result.config
    assert (config.method, config.pattern, config.dampening, config.column_block) == ("sparsegpt", "2:4", 0.05, 64)
    records = [r for r in shared_store().list_experiments(kind=SPARSIFY_KIND) if r.name == "SparseGPT 50% 2:4 sparsify"]
    assert sorted(r.config["column_block"] for r in records) == [64, 128]
    page = open_app("experiments")                                          # the run's settings said there too
    page.selectbox(key="experiments_pick").set_value(next(r.id for r in records if r.config["column_block"] == 64))
    page.run()
    assert_clean(page)
    assert any(c.value.startswith("SparseGPT: dampening 0.05 × the Hessian's mean diagonal, column blocks of 64")
               for c in page.caption)
