"""Prune by target: the prediction is what Prune removes, the measured parameters equal the predicted ones,
a reload replays the step to the same weights, and the run is recorded in the experiment store. (With recovery the
prune runs as a background job: tests/app/test_target_prune_job.py.)"""

from __future__ import annotations

import torch

from sentinel.pruning.budget import Target
from tests.app.conftest import assert_clean, dashboard, open_app, url_of


def test_prune_by_target_predicts_the_measured_parameters_and_survives_a_reload():
    at = open_app("prune")
    at.radio(key="prune_how").set_value("target").run()
    at.slider(key="budget_share").set_value(0.5).run()
    assert at.radio(key="budget_recovery").value == "none"         # applied on the page, no job
    assert_clean(at)
    prediction = at.table[0].value
    predicted_params = prediction.loc["Parameters", "After Prune (predicted)"]
    assert prediction.loc["Prunable parameters (attention + MLP)", "Change"] == "-50.0%"
    assert any(m.value.startswith("**Pressing Prune would remove** ") and "heads" in m.value and "neurons" in m.value
               for m in at.markdown)
    assert len(at.get("vega_lite_chart")) >= 2                      # the map and the per-layer counts
    at.button(key="prune_go").click().run()
    assert_clean(at)
    state = dashboard(at)
    step = state.working.steps[-1]
    assert step.mode == "remove" and step.recovery is None and step.neurons and step.heads
    assert state.recover_job_id is None
    after = next(t.value for t in at.table if "Before" in t.value.columns)
    assert after.loc["Parameters", "After"] == predicted_params     # predicted == measured
    assert after.loc["Prefill speed measured", "After"] != "not measured (nothing removed)"
    again = open_app("prune", query=url_of(at))                     # F5 replays the step
    restored = dashboard(again).working
    assert restored.history() == state.working.history()
    theirs = dict(restored.model.state_dict())
    assert all(torch.equal(value, theirs[name]) for name, value in state.working.model.state_dict().items())
    from app_support.state import shared_store

    run = next(r for r in shared_store().list_experiments(kind="dashboard-compress")
               if r.name == "params 50% heads+neurons, no recovery")
    assert run.status == "completed" and run.summary["params_after"] == run.summary["predicted_params_after"]
    assert run.summary["perplexity_after"] == after_perplexity(at) and run.config["dashboard_steps"] == []


def after_perplexity(at) -> float:
    return dashboard(at).caches["figures-now"][1].perplexity


def test_a_target_setting_matches_the_library_target_syntax():
    from sentinel.ui.budget import BudgetSettings

    settings = BudgetSettings(("heads",), "flops", 0.25, "uniform", "lstsq")
    assert Target.parse(settings.target()).flops == 0.25
    assert settings.label() == "target flops=0.25 of heads (uniform, lstsq recovery)"
