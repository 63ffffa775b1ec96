"""Results recorded with the model they were made on: a new model forgets them, more pruning labels them, and a
dashboard fine-tune without the app's protocol numbers is not shown under that heading."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from sentinel.store import ExperimentRecord
from sentinel.ui.history import NOT_ON_PROTOCOL, experiments_frame, level_frame
from sentinel.ui.session import made_before, ran_on
from sentinel.ui.state import DashboardState

STEP = {"mode": "mask", "heads": {"0": [1, 2]}, "how": "strategy", "strategy": "entropy", "ratio": 0.3}
STEP2 = {"mode": "remove", "heads": {"1": [0]}, "how": "selection", "strategy": None, "ratio": None}


def session(source: str, steps: list[dict]) -> SimpleNamespace:
    """What `made_before` reads of a WorkingModel: its base model's source and its steps."""
    return SimpleNamespace(base=SimpleNamespace(source=source), history=lambda: list(steps))


def test_a_new_model_forgets_every_job_of_the_previous_one():
    state = DashboardState(job_id="f", compare_job_id="c", recover_job_id="r", sensitivity_job_id="s",
                           gradual_job_id="g", linked_job="f")
    state.forget_model()
    assert (state.job_id, state.compare_job_id, state.recover_job_id, state.sensitivity_job_id,
            state.gradual_job_id, state.linked_job) == (None,) * 6


def test_a_result_names_the_step_it_was_made_before(tmp_path):
    base = str(tmp_path / "stories")
    record = {"base_model": base, "dashboard_steps": [STEP]}
    assert made_before(record, session(base, [STEP]), "This scan") is None and ran_on(record, session(base, [STEP]))
    assert made_before(record, session(base, [STEP, STEP2]), "This scan") == (
        "This scan was made on your model before step 2 (remove 1 head; base stories).")
    assert made_before(record, session(base, []), "This scan") == (
        "This scan was made on your model with other pruning steps (1 then, 0 now; base stories).")
    assert made_before(record, session(str(tmp_path / "other"), [STEP]), "This scan") == (
        "This scan was made on another model (stories), not the one open now.")
    assert not ran_on({"dashboard_steps": [STEP]}, session(base, [STEP]))       # no base recorded: not this one


def finetune(exp_id: str, summary: dict) -> ExperimentRecord:
    config = {"strategy": "entropy", "pruning_ratio": 0.3, "dashboard_steps": [STEP], "steps": 4}
    return ExperimentRecord(exp_id, f"run {exp_id}", "finetune", "m", "completed", config, summary, 1.0, 1.0)


def test_a_dashboard_finetune_without_protocol_numbers_shows_none_under_that_heading():
    trainer = {"perplexity_before": 9.0, "perplexity_after": 8.0, "val_perplexity": 8.0}
    old = finetune("old", trainer)
    new = finetune("new", {**trainer, "protocol_perplexity_before": 7.5, "protocol_perplexity_after": 7.25,
                           "protocol_tokens": 4064})
    cli = ExperimentRecord("cli", "cli run", "finetune", "m", "completed", {"steps": 4}, trainer, 1.0, 1.0)
    table = experiments_frame([old, new, cli]).set_index("id")
    assert pd.isna(table.loc["old", "perplexity"])                       # not the trainer's 8.0
    assert table.loc["old", "perplexity_note"].startswith(NOT_ON_PROTOCOL)
    assert table.loc["new", "perplexity"] == 7.25 and pd.isna(table.loc["new", "perplexity_note"])
    assert table.loc["cli", "perplexity"] == 8.0 and pd.isna(table.loc["cli", "perplexity_note"])   # its own
    points = level_frame([old, new])
    assert set(points["run"]) == {"new"} and sorted(points["perplexity"]) == [7.25, 7.5]
