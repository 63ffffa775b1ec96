"""Recovered steps fitted by a job: replay loads their saved weights (never a file of another step), a missing or
mismatched file is re-fitted with a note, and neuron lists travel in the page address as compact bitmasks."""

from __future__ import annotations

import base64
import json

import pytest
import torch

from sentinel.models import load_model
from sentinel.ui.recovered import RecoveredWeightsError, save_recovered, weights_path
from sentinel.ui.session import PruneStep, WorkingModel
from sentinel.ui.state import ModelChoice, SessionSnapshot, decode_indices, encode_indices

PLAN = {"heads": {0: [1]}, "neurons": {1: [0, 5, 9, 17]}}


@pytest.fixture
def fitted(tiny_lm_dir, tmp_path, monkeypatch) -> WorkingModel:
    """A session whose one step was re-fitted (lstsq) and saved as a job would save it."""
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    working = WorkingModel(load_model(str(tiny_lm_dir)))
    step = working.apply(PLAN, "remove", "target", recovery="lstsq")
    step.job, step.fingerprint = "job1", working.fingerprint(step, [])
    save_recovered(working.model, weights_path(step.job), step.fingerprint)
    return working


def replayed(working: WorkingModel, steps: list[dict] | None = None) -> WorkingModel:
    again = WorkingModel(working.base)
    again.replay([PruneStep.from_dict(s) for s in steps or working.history()])
    return again


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    theirs = b.state_dict()
    return all(torch.equal(value, theirs[name]) for name, value in a.state_dict().items())


def test_replay_and_undo_load_the_saved_weights_without_refitting(fitted, monkeypatch):
    def must_not_refit(*args, **kwargs):
        raise AssertionError("recovery ran again although its weights were saved")

    monkeypatch.setattr("sentinel.ui.session.prune_and_recover", must_not_refit)
    again = replayed(fitted)
    assert again.history() == fitted.history() and again.notes == []
    assert same_weights(fitted.model, again.model)
    again.apply({(1, 2)}, "mask", "by hand")
    again.undo()                                     # replays the recovered step from its file
    assert same_weights(fitted.model, again.model) and again.notes == []


def test_a_missing_file_is_refitted_with_a_note(fitted):
    weights_path("job1").unlink()
    again = replayed(fitted)
    assert len(again.notes) == 1 and "missing" in again.notes[0] and "computed again" in again.notes[0]
    assert again.history() == fitted.history()
    for name, value in fitted.model.state_dict().items():     # the same fit, recomputed
        assert torch.allclose(value, again.model.state_dict()[name], atol=1e-5), name


def test_a_file_or_fingerprint_of_another_step_is_never_used(fitted, monkeypatch):
    refits = []
    monkeypatch.setattr("sentinel.ui.session._apply", lambda *args, **kwargs: refits.append(args[2]))
    save_recovered(fitted.model, weights_path("job1"), "0" * 16)          # a file of another step at that place
    again = replayed(fitted)
    assert "another pruning step" in again.notes[0] and len(refits) == 1
    edited = [{**fitted.history()[0], "fingerprint": "f" * 16}]           # an edited page address
    again = replayed(fitted, edited)
    assert "recorded fingerprint" in again.notes[0] and len(refits) == 2


def test_adopting_refuses_weights_fitted_before_the_model_changed(fitted):
    step = PruneStep.from_dict(fitted.history()[0])
    other = WorkingModel(fitted.base)
    other.apply({(1, 0)}, "mask", "by hand")
    with pytest.raises(RecoveredWeightsError, match="has changed since"):
        other.adopt(step)
    assert [s.mode for s in other.steps] == ["mask"]
    fresh = WorkingModel(fitted.base)
    fresh.adopt(step)
    assert same_weights(fitted.model, fresh.model)


def test_neuron_lists_travel_as_bitmasks_and_old_addresses_still_decode():
    indices = list(range(0, 3072, 2))                       # half of a 3,072-neuron layer
    assert decode_indices(encode_indices(indices)) == indices and encode_indices([]) == ""
    step = PruneStep("remove", {0: [1]}, "target", neurons={layer: indices for layer in range(6)},
                     recovery="lstsq", job="abc123", fingerprint="0123456789abcdef").to_dict()
    snapshot = SessionSnapshot(ModelChoice(), (step,), recover_job="def456")
    decoded = SessionSnapshot.decode(snapshot.encode())
    assert decoded.steps == (step,) and decoded.recover_job == "def456"
    listed = base64.urlsafe_b64encode(json.dumps(step["neurons"]).encode()).decode()
    assert len(snapshot.encode()) < len(listed) / 10        # ~3 KB of address instead of ~40 KB
    old = {"m": None, "d": "auto", "t": "auto", "h": [], "a": None, "j": None, "c": None,
           "p": [["remove", {"0": [1]}, "target", None, None, {"n": {"2": [7, 3]}, "l": {}, "r": "bias"}]]}
    token = base64.urlsafe_b64encode(json.dumps(old).encode()).decode().rstrip("=")
    (restored,) = SessionSnapshot.decode(token).steps
    assert restored["neurons"] == {"2": [7, 3]} and restored["recovery"] == "bias" and "job" not in restored
