"""The plain-data side of keeping a session's work: a selection after a step, the head 'Look inside' shows, and a
session kept as a run before another model replaces it."""

import torch

from sentinel.models import LoadedModel, get_layout
from sentinel.store import Store
from sentinel.ui.inside import head_to_look_at
from sentinel.ui.kept_sessions import SESSION_KIND, keep_session, session_work
from sentinel.ui.selection import HeadSelection, NeuronRule, UnitSelection, keep_existing
from sentinel.ui.session import WorkingModel
from tests.conftest import make_tiny_model

RULE = NeuronRule("magnitude", 0.25, ())


def test_a_selection_keeps_what_is_still_active_and_names_what_went():
    heads = HeadSelection(((0, 1), (1, 2), (2, 3)), ((0, 1),))
    units = UnitSelection((0, 2), (), {0: (1, 2), 1: (4, 5)}, RULE)
    kept = keep_existing(heads, units, active=[(0, 1), (2, 3)], blocks=[0, 1],
                         neurons={0: [0, 1, 2, 3], 1: [5, 6], 2: []})
    assert kept.heads == HeadSelection(((0, 1), (2, 3)), ((0, 1),))           # the chart's last points stay
    assert kept.units == UnitSelection((0,), (), {0: (1, 2), 1: (5,)}, None)
    assert kept.dropped == ("head L1 H2", "layer 2", "1 neuron (layer 1: 1) — so the rule 'the lowest 25% of the "
                            "neurons by magnitude in every layer' no longer describes the neurons left; set it again "
                            "on Maps → MLP neurons to select by it")
    assert kept.note().startswith("Dropped from your selection: head L1 H2; layer 2; 1 neuron (layer 1: 1)")


def test_a_selection_the_step_did_not_touch_is_kept_whole_with_its_rule():
    heads, units = HeadSelection(((0, 1),)), UnitSelection((1,), (), {0: (3,)}, RULE)
    kept = keep_existing(heads, units, active=[(0, 1)], blocks=[0, 1], neurons={0: [3], 1: []})
    assert (kept.heads, kept.units, kept.dropped, kept.note()) == (heads, units, (), None)


def test_look_inside_follows_a_new_selection_and_otherwise_stays_on_its_head():
    assert head_to_look_at((0, 0), None, ((1, 7), (2, 0))) == ((1, 7), (1, 7))    # a new selection: its first head
    assert head_to_look_at((2, 3), (1, 7), ((1, 7),)) == ((2, 3), (1, 7))         # picked by hand: stays
    assert head_to_look_at((2, 3), (1, 7), ()) == ((2, 3), None)                 # cleared: stays, follows nothing
    assert head_to_look_at((2, 3), None, ((1, 7),)) == ((1, 7), (1, 7))          # the same head selected again


def test_a_session_with_steps_or_a_tune_is_kept_as_a_run(tmp_path):
    model = make_tiny_model("gpt2")
    working = WorkingModel(LoadedModel(model, None, get_layout(model), torch.device("cpu"), "tiny", 0.0))
    assert session_work(working, None) is None and session_work(None, "j/final") is None
    assert session_work(working, "j/final").describe() == "an adopted fine-tune"
    working.apply({0: [1, 2]}, "mask", "selection of 2 heads")
    working.apply({1: [0]}, "remove", "selection of 1 head")
    work = session_work(working, "j/final")
    assert work.describe() == "2 pruning steps and an adopted fine-tune"
    store = Store(tmp_path / "runs.db")
    run = store.get_experiment(keep_session(store, working, "j/final", "cpu", "auto", 12.5, 11.0))
    assert (run.kind, run.status, run.model) == (SESSION_KIND, "kept", "tiny")
    assert run.name == "session: selection mask (2 heads) then selection remove (1 head) + fine-tune j/final"
    assert run.config["dashboard_steps"] == working.history() and run.config["adopted_finetune"] == "j/final"
    assert (run.summary["perplexity_pruned"], run.summary["perplexity_after"]) == (12.5, 11.0)
    assert run.summary["heads_pruned"] == 3
    assert [(h["stage"], h["layer"], h["head"], h["mode"]) for h in store.get_pruned_heads(run.id)] == [
        ("step 1", 0, 1, "mask"), ("step 1", 0, 2, "mask"), ("step 2", 1, 0, "remove")]
