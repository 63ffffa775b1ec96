"""Prune by target: the prediction is what Prune removes, the measured parameters equal the predicted ones,
a reload replays the step to the same weights, and the run is recorded in the experiment store. (With recovery the
prune runs as a background job: tests/app/test_target_prune_job.py.)"""

from __future__ import annotations

import torch

from sentinel.pruning.budget import Target
from sentinel.ui.budget import BODY_PREDICTION
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


def test_a_speedup_target_predicts_the_flops_it_implies_and_shows_the_measured_speed_beside_it():
    from sentinel.pruning.budget import select_budget
    from sentinel.ui.budget import BUDGET_SEQ_LEN

    at = open_app("prune")
    at.radio(key="prune_how").set_value("target").run()
    at.radio(key="budget_measure").set_value("speedup").run()
    at.slider(key="budget_speedup").set_value(1.5).run()
    assert_clean(at)
    state = dashboard(at)
    preview = state.caches["budget-last"]
    assert preview.settings.target() == "speedup=1.5"
    implied = select_budget(state.working.model, preview.scores, Target(flops=1 - 1 / 1.5),
                            whole_kv_groups=True, seq_len=BUDGET_SEQ_LEN)
    assert preview.result.plan == implied.plan and preview.result.flops_after == implied.flops_after
    prediction = at.table[0].value
    assert prediction.loc[f"Body FLOPs per token (context {BUDGET_SEQ_LEN})", "Change"] == \
        f"-{implied.flops_share_removed:.1%}"
    assert prediction.loc[BODY_PREDICTION, "After Prune (predicted)"] == \
        f"{implied.speedup_predicted:.2f}×"
    assert any("predicted from the body's FLOPs: it removes 1 − 1/1.5 = 33.3%" in c.value for c in at.caption)
    at.button(key="prune_go").click().run()
    assert_clean(at)
    versus = next(t.value for t in at.table if "Against the target" in t.value.columns)
    assert versus.loc["Target (predicted from the body's FLOPs)", "Value"] == "1.50×"
    assert versus.loc["Predicted from the body's FLOPs (this plan)", "Value"] == f"{implied.speedup_predicted:.2f}×"
    speed = state.caches["speed-now"][1]
    met = []
    for name, ratio in (("prefill", speed.prefill), ("generation", speed.decode)):
        verdict = versus.loc[f"Measured: {name}", "Against the target"]
        met.append(ratio.measurable and ratio.median >= 1.5)
        assert verdict == ("meets the target" if met[-1] else "short of the 1.5× target" if ratio.measurable
                           else "not measurably faster (the range includes 1.00×)")
    short = [w.value for w in at.warning if "falls short of the 1.5× target" in w.value]
    assert bool(short) == (not all(met))
