"""A target prune with recovery runs as a background job: progress that survives a reload, adoption as a step
whose reload loads the saved weights (never re-fitting them), cancel that keeps nothing, and its experiment."""

from __future__ import annotations

import threading

import torch

from sentinel.ui.history import readable, significant
from sentinel.ui.recovered import weights_path
from sentinel.ui.state import SessionSnapshot
from tests.app.conftest import assert_clean, dashboard, open_app, url_of, wait_for


def set_target(at, recovery: str):
    at.radio(key="prune_how").set_value("target").run()
    at.slider(key="budget_share").set_value(0.5).run()
    at.radio(key="budget_recovery").set_value(recovery).run()
    assert_clean(at)
    return at.table[0].value.loc["Parameters", "After Prune (predicted)"]


def progress_texts(at) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_a_recovered_target_prune_is_a_job_whose_result_replays_from_saved_weights(monkeypatch):
    from app_support.state import shared_store
    import sentinel.ui.target_prune as target_prune

    hold = threading.Event()            # keeps the job at its first measurement until the test has looked
    measure = target_prune.protocol_perplexity

    def held(*args, **kwargs):
        assert hold.wait(120), "the test never released the job"
        return measure(*args, **kwargs)

    monkeypatch.setattr(target_prune, "protocol_perplexity", held)
    at = open_app("prune")
    predicted_params = set_target(at, "bias")
    at.button(key="prune_go").click().run()
    assert_clean(at)
    state = dashboard(at)
    job_id = state.recover_job_id
    assert job_id is not None and not state.working.steps                 # nothing changed yet; the page works on
    wait_for(at, lambda a: "measuring your model before" in " ".join(progress_texts(a)))
    assert at.button(key="prune_go").disabled                              # one target prune at a time
    assert SessionSnapshot.decode(url_of(at)["s"]).recover_job == job_id
    reloaded = open_app("prune", query=url_of(at))                         # F5 while the job runs
    assert dashboard(reloaded).recover_job_id == job_id
    assert any("Target prune with recovery" in t for t in progress_texts(reloaded))
    hold.set()
    wait_for(at, lambda a: dashboard(a).recover_job_id is None)            # adopted
    at.run()
    step = state.working.steps[-1]
    job = shared_store().get_job(job_id)
    assert job.kind == "target-prune" and job.state == "succeeded"
    assert job.progress["step"] == job.progress["total_steps"] > 4         # one event per re-fitted projection
    assert (step.job, step.fingerprint, step.recovery) == (job_id, job.result["step"]["fingerprint"], "bias")
    assert step.neurons and step.heads and weights_path(job_id).is_file()
    assert state.working.last_recovery is not None and state.working.last_recovery.method == "bias"
    after = next(t.value for t in at.table if "Before" in t.value.columns)
    assert after.loc["Parameters", "After"] == predicted_params          # predicted == measured

    def must_not_refit(*args, **kwargs):
        raise AssertionError("a reload re-fitted the recovery instead of loading its saved weights")

    monkeypatch.setattr("sentinel.ui.session.prune_and_recover", must_not_refit)
    again = open_app("prune", query=url_of(at))                           # F5 after adoption
    restored = dashboard(again).working
    assert restored.history() == state.working.history() and restored.notes == []
    theirs = dict(restored.model.state_dict())
    assert all(torch.equal(value, theirs[name]) for name, value in state.working.model.state_dict().items())
    again.button(key="prune_undo").click().run()                           # undo still works
    assert_clean(again)
    assert not dashboard(again).working.steps

    experiment = shared_store().get_experiment(job.experiment_id)
    assert experiment.name == "params 50% heads+neurons, bias" and experiment.status == "completed"
    summary = experiment.summary
    assert summary["params_after"] == summary["predicted_params_after"]
    assert summary["perplexity_after"] == job.result["perplexity"]["after"]
    for name in ("baseline_perplexity", "perplexity_pruned", "perplexity_after"):     # each with its 95% interval
        low, high = summary[f"{name}_ci"]
        assert low <= summary[name] <= high, name
    at.switch_page("app_pages/experiments.py").run()
    assert_clean(at)
    assert "params 50% heads+neurons, bias" in at.dataframe[0].value["name"].tolist()
    runs = next(d.value for d in at.dataframe if "params predicted" in d.value.columns)
    row = runs[runs["run"] == "params 50% heads+neurons, bias"].iloc[0]
    assert row["params after"] == summary["params_after"] and row["perplexity after"] == significant(
        summary["perplexity_after"])


def test_cancelling_a_target_prune_keeps_nothing(monkeypatch):
    from app_support.state import shared_store
    import time

    def endless(model, tokenizer, prune, method, calibration, progress=None):
        prune(model)
        for done in range(1200):           # a re-fit that only ends when the job is cancelled
            progress(done, 1200)
            time.sleep(0.05)
        raise AssertionError("the job was never cancelled")

    monkeypatch.setattr("sentinel.ui.session.prune_and_recover", endless)
    at = open_app("prune")
    set_target(at, "lstsq")
    at.button(key="prune_go").click().run()
    job_id = dashboard(at).recover_job_id
    wait_for(at, lambda a: "re-fitted" in (shared_store().get_job(job_id).progress.get("message") or ""))
    at.button(key="target_prune_cancel").click().run()
    wait_for(at, lambda a: shared_store().get_job(job_id).state == "cancelled")
    at.run()
    assert_clean(at)
    assert not dashboard(at).working.steps and not weights_path(job_id).exists()
    assert any("cancelled: nothing was kept" in i.value for i in at.info)
    assert shared_store().get_experiment(shared_store().get_job(job_id).experiment_id).status == "cancelled"
    at.button(key="target_prune_dismiss").click().run()
    assert dashboard(at).recover_job_id is None and not any("nothing was kept" in i.value for i in at.info)


def test_the_prune_page_shows_what_least_squares_recovery_bought():
    """Issue 22 #9: after remove + lstsq the before/after table shows the perplexity before the step, right after
    removal and after recovery (its job's protocol measurements: the last equals the table's own 'after'), also
    after a reload."""
    from app_support.state import shared_store

    at = open_app("prune")
    set_target(at, "lstsq")
    at.button(key="prune_go").click().run()
    job_id = dashboard(at).recover_job_id
    wait_for(at, lambda a: dashboard(a).recover_job_id is None)            # adopted
    at.run()
    assert_clean(at)
    measured = shared_store().get_job(job_id).result["perplexity"]
    assert measured["removed"] > measured["after"]                        # the re-fit bought something back
    for page in (at, open_app("prune", query=url_of(at))):                # and a reload reads it from the job
        table = next(t.value for t in page.table if "Before" in t.value.columns)
        removal = table.loc["Perplexity right after removal (step 1, before recovery)"]
        recovered = table.loc["Perplexity after least squares recovery (step 1)"]
        assert removal["Before"] == table.loc["Perplexity", "Before"] == readable(measured["before"])
        assert removal["After"] == recovered["Before"] == readable(measured["removed"])
        assert recovered["After"] == table.loc["Perplexity", "After"] == readable(measured["after"])
        assert recovered["Change"].startswith("-")
