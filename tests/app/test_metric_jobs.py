"""The Maps page's expensive neuron and layer metrics run as the background job kind "unit-metrics": progress,
Cancel, found again after a reload, the same scores as computing them directly; cheap ones stay in the page."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

import sentinel.ui.metric_jobs as metric_jobs
from app_support.state import shared_store
from sentinel.ui.analysis import block_size_for
from sentinel.ui.choices import SampleText
from sentinel.ui.metric_jobs import MetricRequest, metric_signature, runs_in_background
from sentinel.ui.unit_maps import compute_unit_map, layer_frame
from tests.app.conftest import assert_clean, dashboard, open_app, url_of, wait_for
from tests.app.test_unit_maps import chart_rows

SAMPLES = 2                      # two blocks of the bundled text: the loss-impact scan stays short


class Gate:
    """Holds the job at its first layer part until released (the page sees it running: no timing race)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached, self.release = threading.Event(), threading.Event()
        real = metric_jobs.compute_unit_map

        def gated(*args, progress=None, **kwargs):
            def hold(done: int, total: int) -> None:
                progress(done, total)                   # the job's report (raises once cancelled)
                if done == 1:
                    self.reached.set()
                    assert self.release.wait(120), "the test never released the job"
                    progress(done, total)               # a Cancel pressed meanwhile stops the job here

            return real(*args, progress=hold, **kwargs)

        monkeypatch.setattr(metric_jobs, "compute_unit_map", gated)

    def wait(self) -> None:
        assert self.reached.wait(120), "the job never reached its first layer part"


def layer_loss_impact_page(query: dict[str, str] | None = None, samples: int = SAMPLES):
    """The Maps page on layers with loss impact chosen, over `samples` blocks of text (each test its own number, so
    no test finds another's job)."""
    at = open_app("head_maps", query=query)
    dashboard(at).map_samples = samples
    at.segmented_control(key="maps_kind").set_value("layer").run()
    at.segmented_control(key="layer_map_metric").set_value("loss_impact").run()
    assert_clean(at)
    return at


def own_job(at):
    return shared_store().get_job(dashboard(at).caches[("unit-metrics-job", "layer", "loss_impact")])


def layer_charts(at) -> list:
    return [chart_rows(at, i) for i in range(len(at.get("vega_lite_chart")))
            if "part" in chart_rows(at, i).columns]


def test_layer_loss_impact_runs_as_a_job_with_progress_and_the_direct_values(monkeypatch):
    gate = Gate(monkeypatch)
    at = layer_loss_impact_page()
    assert not layer_charts(at) and at.button(key="layer_loss_impact_run")
    at.button(key="layer_loss_impact_run").click().run()
    assert_clean(at)
    job = own_job(at)
    assert job.kind == "unit-metrics" and job.params["request"]["metric"] == "loss_impact"
    copies = [Path(p) for p in job.params["input_copies"]]
    gate.wait()
    at.run()
    assert_clean(at)
    assert not layer_charts(at)                                   # nothing drawn while it runs...
    assert "layer part 1 of 18" in at.progress[0].proto.text      # ...its progress per layer part instead
    assert at.button(key="unit_metrics_cancel")
    gate.release.set()
    wait_for(at, lambda a: own_job(a).state not in ("queued", "running"))
    at.run()
    assert_clean(at)
    assert own_job(at).state == "succeeded", own_job(at).error
    assert copies and not any(p.exists() for p in copies)        # the model copy went with the job
    working = dashboard(at).working
    size = block_size_for(working.model, dashboard(at).map_seq_len)
    blocks = SampleText().blocks(working.tokenizer, size, SAMPLES * size)
    direct = layer_frame(compute_unit_map(working.model, working.tokenizer, "layer", "loss_impact", blocks).scores)
    shown = layer_charts(at)[0]
    assert list(shown.layer) == list(direct.layer) and list(shown.part) == list(direct.part)
    assert shown.value.tolist() == pytest.approx(direct.value.tolist(), rel=1e-6, abs=1e-9)
    again = layer_loss_impact_page(url_of(at))                   # a reload draws the job's result at once
    assert layer_charts(again)[0].value.tolist() == shown.value.tolist() and not again.progress


def test_cancelling_the_job_shows_nothing_and_says_nothing_was_kept(monkeypatch):
    gate = Gate(monkeypatch)
    at = layer_loss_impact_page(samples=SAMPLES + 1)
    at.button(key="layer_loss_impact_run").click().run()
    gate.wait()
    at.run()
    at.button(key="unit_metrics_cancel").click().run()
    gate.release.set()
    wait_for(at, lambda a: own_job(a).state not in ("queued", "running"))
    at.run()
    assert_clean(at)
    assert own_job(at).state == "cancelled" and own_job(at).result in (None, {})
    assert not layer_charts(at)
    assert any("cancelled: nothing was kept" in i.value for i in at.info)
    assert at.button(key="layer_loss_impact_run")                # it can be started again


def test_a_reload_during_the_job_finds_it_again(monkeypatch):
    gate = Gate(monkeypatch)
    at = layer_loss_impact_page(samples=SAMPLES + 2)
    at.button(key="layer_loss_impact_run").click().run()
    job_id = own_job(at).id
    gate.wait()
    reloaded = layer_loss_impact_page(url_of(at), SAMPLES + 2)   # a new session: same model, text, sampling
    assert "layer part 1 of 18" in reloaded.progress[0].proto.text     # the same job, not a new one
    assert not any(b.key == "layer_loss_impact_run" for b in reloaded.button)
    other = layer_loss_impact_page(url_of(at), SAMPLES + 3)     # other sampling: the running job is not reused
    assert other.button(key="layer_loss_impact_run") and not other.progress
    gate.release.set()
    wait_for(reloaded, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    reloaded.run()
    assert_clean(reloaded)
    assert layer_charts(reloaded) and len(layer_charts(reloaded)[0]) == 18


def test_data_metrics_go_to_the_background_on_larger_models_only(monkeypatch):
    assert runs_in_background("loss_impact", 1, 1)
    assert not runs_in_background("magnitude", 10**12, 10**6)              # weights only: always in the page
    assert not runs_in_background("gradient", 5_000_000, 1024)             # the bundled model: well under a second
    assert runs_in_background("gradient", 124_000_000, 1024)               # a GPT-2-sized model: a job
    monkeypatch.setattr(metric_jobs, "BACKGROUND_WORK", 1)                  # as on a large model
    at = open_app("head_maps")
    at.segmented_control(key="maps_kind").set_value("neuron").run()
    assert_clean(at)
    assert at.get("vega_lite_chart")                                       # magnitude: drawn at once
    at.segmented_control(key="neuron_map_metric").set_value("gradient").run()
    assert_clean(at)
    assert at.button(key="neuron_gradient_run") and not at.get("vega_lite_chart")


def test_the_signature_changes_with_the_model_pruning_text_and_request():
    request = MetricRequest("layer", "loss_impact", 8, 128)
    base = metric_signature("/models/a", [], SampleText(), request)
    assert base == metric_signature("/models/a", [], SampleText(), request)
    assert len({base, metric_signature("/models/b", [], SampleText(), request),
                metric_signature("/models/a", [{"op": "mask", "heads": [[0, 1]]}], SampleText(), request),
                metric_signature("/models/a", [], SampleText("pasted", "pasted text", b"other words"), request),
                metric_signature("/models/a", [], SampleText(), MetricRequest("layer", "loss_impact", 4, 128)),
                metric_signature("/models/a", [], SampleText(), MetricRequest("layer", "gradient", 8, 128))}) == 6


def test_head_loss_impact_runs_as_a_job_and_joins_the_head_maps(monkeypatch):
    from sentinel.ui.analysis import compute_maps

    gate = Gate(monkeypatch)
    at = open_app("head_maps")
    dashboard(at).map_samples = SAMPLES
    at.segmented_control(key="map_metric").set_value("loss_impact").run()
    at.button(key="loss_impact_run").click().run()
    gate.wait()
    at.run()
    assert_clean(at)
    assert "head 1 of 48" in at.progress[0].proto.text and at.button(key="unit_metrics_cancel")
    gate.release.set()
    from app_support.state import cached_maps

    def adopted(a):
        """The maps of the model and sampling as they are now (not a stale entry kept under another key)."""
        maps = cached_maps(dashboard(a), dashboard(a).working)
        return maps is not None and "loss_impact" in maps.scores

    wait_for(at, adopted)
    working = dashboard(at).working
    size = block_size_for(working.model, dashboard(at).map_seq_len)
    blocks = SampleText().blocks(working.tokenizer, size, SAMPLES * size)
    direct = compute_maps(working.model, working.tokenizer, blocks, ["loss_impact"], working.version)
    shown = cached_maps(dashboard(at), working)
    assert shown.tokens == direct.tokens
    torch.testing.assert_close(shown.scores["loss_impact"].values, direct.scores["loss_impact"].values,
                               rtol=1e-6, atol=1e-9, equal_nan=True)
    assert [c.key for c in at.get("vega_lite_chart")][:1] == ["head_map_chart"]


def test_weights_measure_speed_is_a_job_found_after_a_reload_and_cancellable(monkeypatch):
    """Weights' Measure speed runs as the job kind weights-speed: a reload (sparsifying again with the same settings)
    finds the running job; Cancel stops it and nothing is shown."""
    import sentinel.ui.weights as weights_module

    started, real_speed = threading.Event(), weights_module.interleaved_speed

    def until_cancelled(models, *args, **kwargs):
        """Times nothing until the page's Cancel reaches the job (no timing race), then lets the job stop."""
        for _ in range(2400):
            kwargs["on_run"](0, 1, next(iter(models)))              # raises JobCancelled once cancelled
            started.set()
            time.sleep(0.05)
        return real_speed(models, *args, **kwargs)

    monkeypatch.setattr(weights_module, "interleaved_speed", until_cancelled)

    def sparsified(query: dict[str, str] | None = None):
        at = open_app("weights", query=query)
        at.selectbox(key="weights_method").set_value("l1").run()
        at.slider(key="weights_sparsity").set_value(0.3).run()
        at.button(key="weights_go").click().run()
        assert_clean(at)
        return at

    at = sparsified()
    at.button(key="weights_speed").click().run()
    job_id = dashboard(at).caches["weights-speed-job"]
    copies = [Path(p) for p in shared_store().get_job(job_id).params["input_copies"]]
    assert started.wait(120)
    at.run()
    assert at.button(key="weights_speed").disabled and at.button(key="weights_speed_cancel")
    reloaded = sparsified(url_of(at))                            # a new session, the same sparse copy
    assert reloaded.button(key="weights_speed").disabled and reloaded.progress
    reloaded.button(key="weights_speed_cancel").click().run()
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    at.run()
    assert_clean(at)
    assert shared_store().get_job(job_id).state == "cancelled"
    assert any("cancelled: nothing was kept" in i.value for i in at.info)
    assert not any(m.value.startswith("Measured: prefill ") for m in at.markdown)
    assert copies and not any(p.exists() for p in copies)
