"""The unit-metrics job without the dashboard: a pasted text travels with the model copy, the scores equal the ones
computed directly, the copy and the text go when the job ends, and the lookup never mixes signatures."""

from __future__ import annotations

from pathlib import Path

import torch

from sentinel.jobs import JobManager
from sentinel.models import load_model
from sentinel.store import Store
from sentinel.ui.choices import SampleText
from sentinel.ui.metric_jobs import (MetricRequest, metric_job_for, metric_signature, start_metric_job,
                                     unit_map_of)
from sentinel.ui.unit_maps import compute_unit_map

TEXT = ("Once upon a time a small fox found a red ball in the garden. She rolled it to her friend the owl, who "
        "laughed and rolled it back. They played until the sun went down and the stars came out. ") * 6


def test_a_pasted_text_job_gives_the_direct_scores_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "home"))
    loaded = load_model(None)
    text = SampleText("pasted", "pasted text", TEXT.encode("utf-8"))
    request = MetricRequest("neuron", "activation", samples=2, block_size=32, device="cpu")
    signature = metric_signature(loaded.source, [], text, request)
    store = Store(tmp_path / "s.db")
    with JobManager(store) as jobs:
        job_id = start_metric_job(jobs, loaded.model, loaded.tokenizer, text, request, signature)
        job = jobs.wait(job_id, timeout=120)
    assert job.state == "succeeded", job.error
    copies = [Path(p) for p in job.params["input_copies"]]
    assert copies and not any(p.exists() for p in copies)          # model copy and text removed with the job
    found = unit_map_of(job)
    direct = compute_unit_map(loaded.model, loaded.tokenizer, "neuron", "activation", text.blocks(
        loaded.tokenizer, 32, 64))
    assert found.tokens == direct.tokens == 64 and found.text == direct.text
    torch.testing.assert_close(found.scores.values, direct.scores.values, equal_nan=True)
    assert metric_job_for(store, signature).id == job_id
    other = metric_signature(loaded.source, [], SampleText(), request)       # the bundled text: not this job
    assert metric_job_for(store, other) is None and metric_job_for(store, other, own=job_id) is None


def test_a_pruned_models_copy_gives_the_same_layer_loss_impact(tmp_path, monkeypatch):
    """The job reads a saved copy of a model with masked heads and neurons: its pruning state travels with it."""
    from sentinel.pruning.apply import apply_plan

    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "home"))
    loaded = load_model(None)
    apply_plan(loaded.model, {"heads": {0: [1, 2], 3: [0]}, "neurons": {1: list(range(500))}, "layers": {}}, "mask")
    request = MetricRequest("layer", "loss_impact", samples=2, block_size=32, device="cpu")
    steps = [{"op": "test-mask"}]
    with JobManager(Store(tmp_path / "s.db")) as jobs:
        job = jobs.wait(start_metric_job(jobs, loaded.model, loaded.tokenizer, SampleText(), request,
                                         metric_signature(loaded.source, steps, SampleText(), request)), timeout=120)
    assert job.state == "succeeded", job.error
    assert job.progress["message"] == "layer part 18 of 18"
    direct = compute_unit_map(loaded.model, loaded.tokenizer, "layer", "loss_impact",
                              SampleText().blocks(loaded.tokenizer, 32, 64))
    torch.testing.assert_close(unit_map_of(job).scores.values, direct.scores.values, equal_nan=True)
