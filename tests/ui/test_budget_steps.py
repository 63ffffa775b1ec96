"""Steps beyond heads: neurons, layers and recovery survive to_dict, the page address, undo and replay."""

from __future__ import annotations

import base64
import json


from sentinel.evaluation.size import parameter_count
from sentinel.models import load_model
from sentinel.ui.budget import BudgetSettings, apply_budget, budget_scores, per_layer_counts, predict_budget
from sentinel.ui.session import PruneStep, WorkingModel
from sentinel.ui.state import ModelChoice, SessionSnapshot


def test_a_budget_step_round_trips_through_the_address_and_undo():
    working = WorkingModel(load_model(None))
    working.apply({(0, 1), (2, 3)}, "mask", "by hand")
    settings = BudgetSettings(("neurons",), "flops", 0.2, "uniform")
    result = predict_budget(working, settings, budget_scores(working.model, settings.units))
    counts = per_layer_counts(result.plan, 6)
    assert set(counts.kind) == {"neurons"} and counts["count"].nunique() == 1     # uniform: same count per layer
    step = apply_budget(working, result, settings)
    assert parameter_count(working.model) == result.total_params_after
    snapshot = SessionSnapshot(ModelChoice(), tuple(working.history()))
    assert SessionSnapshot.decode(snapshot.encode()).steps == snapshot.steps
    again = WorkingModel(working.base)
    again.replay([PruneStep.from_dict(s) for s in snapshot.steps])
    assert parameter_count(again.model) == parameter_count(working.model)
    assert working.undo() == step and parameter_count(working.model) == parameter_count(working.base.model)
    assert working.status() == {(0, 1): "masked", (2, 3): "masked"}


def test_an_address_written_before_neuron_steps_still_decodes():
    old = {"m": None, "d": "auto", "t": "auto", "p": [["mask", {"1": [2]}, "by hand", None, None]], "h": [],
           "a": None, "j": None, "c": None}
    token = base64.urlsafe_b64encode(json.dumps(old).encode()).decode().rstrip("=")
    steps = SessionSnapshot.decode(token).steps
    assert steps == ({"mode": "mask", "heads": {"1": [2]}, "how": "by hand", "strategy": None, "ratio": None},)
    assert PruneStep.from_dict(steps[0]).plan.counts() == {"heads": 1, "neurons": 0, "layers": 0}
