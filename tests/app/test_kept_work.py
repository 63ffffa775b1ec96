"""The dashboard neither loses nor misstates what the user did (issue 22): loading another model keeps the session's
work as a run and asks first; the preview after a prune says why the same settings cannot prune again; selections
survive a prune unless their units went; the head looked inside is the one the selector shows."""

from __future__ import annotations

import re

from app_support.state import shared_store
from sentinel.pruning.strategies import heads_for_ratio
from sentinel.ui.history import steps_name
from sentinel.ui.state import TunedModel
from tests.app.conftest import assert_clean, dashboard, errors, open_app


def test_after_a_prune_the_preview_says_why_the_same_settings_cannot_prune_again_not_that_it_failed():
    at = open_app("prune")
    at.selectbox(key="prune_strategy").set_value("random").run()
    at.slider(key="prune_ratio").set_value(0.7).run()
    at.button(key="prune_go").click().run()
    assert_clean(at)
    pruned = heads_for_ratio(0.7, 48)                       # 34 masked, 14 still active
    assert len(dashboard(at).working.status()) == pruned
    assert errors(at) == []                                 # the step worked: no red box
    [note] = [i.value for i in at.info if "Pressing Prune again" in i.value]
    assert f"a further 70% of the {48 - pruned} heads still active, which cannot be done" in note
    assert "min_heads=1 per layer allows only" in note
    assert at.button(key="prune_go").disabled               # nothing these settings could apply now
    at.slider(key="prune_ratio").set_value(0.3).run()       # a further step that can be met: previewed, enabled
    assert errors(at) == [] and not at.button(key="prune_go").disabled
    at.slider(key="prune_ratio").set_value(0.7).run()
    at.number_input(key="prune_min_heads").set_value(2).run()   # new settings that cannot be met: still an error
    assert errors(at)[0].startswith("Could not finish previewing the strategy's choice: Ratio 0.7 asks for")
    assert at.button(key="prune_go").disabled


def inside_charts(at) -> list[str]:
    """The heads 'Look inside a head' draws now, read from its two charts' titles (base model, your model now)."""
    found = [re.search(r"(?:Base model|Your model now): (L\d+ H\d+)", c.proto.spec) for c in at.get("vega_lite_chart")]
    return [m.group(1) for m in found if m]


def test_look_inside_shows_one_head_in_its_selector_and_its_charts_whatever_the_page_did_before():
    at = open_app("head_maps")
    at.multiselect(key="selected_heads_list").set_value(["L1 H7"]).run()     # a selection: look at its head
    assert at.selectbox(key="inside_head").value == (1, 7) and inside_charts(at) == ["L1 H7", "L1 H7"]
    at.selectbox(key="inside_head").set_value((2, 3)).run()                  # another head picked by hand
    assert inside_charts(at) == ["L2 H3", "L2 H3"]
    at.switch_page("app_pages/prune.py").run()                               # away and back: still that head
    at.switch_page("app_pages/head_maps.py").run()
    assert_clean(at)
    assert at.selectbox(key="inside_head").value == (2, 3) and inside_charts(at) == ["L2 H3", "L2 H3"]
    at.multiselect(key="selected_heads_list").set_value([]).run()           # clearing the selection switches nothing
    at.toggle(key="inside_show").set_value(True).run()
    assert at.selectbox(key="inside_head").value == (2, 3) and inside_charts(at) == ["L2 H3", "L2 H3"]
    at.multiselect(key="selected_heads_list").set_value(["L4 H1"]).run()    # a new selection: both follow it
    assert at.selectbox(key="inside_head").value == (4, 1) and inside_charts(at) == ["L4 H1", "L4 H1"]


def test_a_selection_made_on_maps_survives_a_prune_but_for_the_units_it_took_which_are_named():
    at = open_app("head_maps")
    every_head = [f"L{layer} H{head}" for layer in range(6) for head in range(8)]
    at.multiselect(key="selected_heads_list").set_value(every_head).run()
    at.segmented_control(key="maps_kind").set_value("layer").run()
    at.multiselect(key="selected_layers_list").set_value(list(range(6))).run()
    at.segmented_control(key="maps_kind").set_value("neuron").run()
    at.slider(key="neuron_rule_share").set_value(0.1).run()            # the lowest 10% in every layer
    assert_clean(at)
    rule, neurons = dashboard(at).units.rule, dict(dashboard(at).units.neurons)
    assert rule is not None and sum(map(len, neurons.values())) == 6 * 102

    at.switch_page("app_pages/prune.py").run()
    at.button(key="prune_go").click().run()                            # entropy 30%, mask: 14 heads, no layers
    assert_clean(at)
    masked = sorted(dashboard(at).working.status())
    assert len(masked) == 14
    at.radio(key="prune_how").set_value("selection").run()
    state = dashboard(at)
    assert state.units.layers == tuple(range(6)) and state.units.neurons == neurons and state.units.rule == rule
    assert set(state.selection.heads) == set(state.working.active())   # the 34 heads the step left active
    assert at.multiselect(key="selected_layers_list").value == list(range(6))
    assert any("Selected neurons:** 612 — the lowest 10%" in m.value for m in at.markdown)
    [note] = [i.value for i in at.info if i.value.startswith("Dropped from your selection")]
    assert note.startswith("Dropped from your selection: heads " + ", ".join(f"L{l} H{h}" for l, h in masked) + ".")

    at.radio(key="prune_how").set_value("target").run()                # a target that removes whole layers
    at.multiselect(key="budget_units").set_value(["layers"]).run()
    at.radio(key="budget_recovery").set_value("none").run()
    at.button(key="prune_go").click().run()
    assert_clean(at)
    state = dashboard(at)
    gone = sorted(set(range(6)) - set(state.working.blocks()))
    assert gone and state.units.layers == tuple(state.working.blocks())
    assert set(state.units.neurons) == set(state.working.blocks()) and state.units.rule is None
    at.radio(key="prune_how").set_value("selection").run()
    [note] = [i.value for i in at.info if i.value.startswith("Dropped from your selection")]
    layers = ("layer " if len(gone) == 1 else "layers ") + ", ".join(map(str, gone))
    assert f"; {layers}; " in note and f"the rule '{rule.describe()}' no longer describes" in note


def test_loading_another_model_keeps_the_work_as_a_run_and_asks_before_discarding_it():
    at = open_app("prune")
    at.button(key="prune_go").click().run()                            # entropy 30%: 14 heads masked
    at.slider(key="prune_ratio").set_value(0.2).run()
    at.button(key="prune_go").click().run()                            # a second step
    state = dashboard(at)
    state.tuned = TunedModel(state.working.model, "job-kept-1", "/somewhere/job-kept-1/model", [])  # an adopted tune
    history = state.working.history()
    assert len(history) == 2

    at.switch_page("app_pages/model.py").run()
    at.button(key="model_load").click().run()                          # the bundled model again: a fresh copy
    assert_clean(at)
    state = dashboard(at)
    assert state.working.history() == history and state.tuned is not None    # nothing discarded yet
    [run] = [r for r in shared_store().list_experiments(kind="session") if r.config["dashboard_steps"] == history]
    assert run.config["adopted_finetune"] == "job-kept-1/final" and run.status == "kept"
    assert run.name == f"session: {steps_name(history)} + fine-tune job-kept-1/final"
    assert [s["stage"] for s in shared_store().get_pruned_heads(run.id)].count("step 1") == 14
    [warning] = [w.value for w in at.warning if "was saved as run" in w.value]
    assert warning.startswith(f"Your session has 2 pruning steps and an adopted fine-tune. It was saved as run "
                              f"{run.id} (listed on the Experiments page)")
    confirm = at.button(key="model_load_confirm")
    assert confirm.label.startswith("Discard current work and load bundled demo model")

    at.button(key="model_load").click().run()                          # asking again keeps no second copy
    assert len([r for r in shared_store().list_experiments(kind="session")
                if r.config["dashboard_steps"] == history]) == 1
    at.button(key="model_load_cancel").click().run()                  # keep working: nothing changes
    assert dashboard(at).working.history() == history and dashboard(at).pending_load is None
    assert not [w for w in at.warning if "was saved as run" in w.value]

    at.switch_page("app_pages/experiments.py").run()                   # the kept run is listed
    assert_clean(at)
    table = at.dataframe[0].value
    assert table.loc[table["id"] == run.id, "name"].tolist() == [run.name]

    at.switch_page("app_pages/model.py").run()
    at.button(key="model_load").click().run()
    at.button(key="model_load_confirm").click().run()                  # confirmed: now the work goes
    assert_clean(at)
    state = dashboard(at)
    assert state.working.steps == [] and state.tuned is None and state.pending_load is None
    assert {m.label: m.value for m in at.metric}["Your pruning steps"] == "0"
