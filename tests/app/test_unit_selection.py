"""Selecting layers and neurons on Maps, as heads are: the selection reaches Prune's 'By my selection', which removes
exactly those blocks and neurons; the page address keeps the selection and the removal across a reload."""

from __future__ import annotations

import torch

from sentinel.metrics import compute_scores
from sentinel.models import load_model
from sentinel.pruning.units import present_neurons
from tests.app.conftest import assert_clean, dashboard, open_app, url_of


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_two_layers_selected_on_maps_are_removed_by_selection_and_stay_removed_after_a_reload():
    base = load_model(None).model                       # the bundled GPT-2: its blocks are transformer.h
    expected = parameters(base) - sum(parameters(base.transformer.h[layer]) for layer in (1, 4))
    at = open_app("head_maps")
    at.segmented_control(key="maps_kind").set_value("layer").run()
    at.multiselect(key="selected_layers_list").set_value([1, 4]).run()     # the keyboard path beside the bar clicks
    assert_clean(at)
    assert dashboard(at).units.layers == (1, 4)
    bars = [c for c in at.get("vega_lite_chart") if "layer_pick" in c.proto.spec]
    assert len(bars) == 1                                                   # the bars carry the click selection
    again = open_app("head_maps", query=url_of(at))                         # the address keeps the selection
    assert dashboard(again).units.layers == (1, 4)

    link = at.button(key="remove_selected_layers")
    assert link.label == "Remove the 2 selected layers"
    link.click().run()
    assert_clean(at)
    assert at.radio(key="prune_how").value == "selection"
    assert at.multiselect(key="selected_layers_list").value == [1, 4]
    assert not [r for r in at.radio if r.key == "prune_mode"]             # layers are removed, never masked
    at.switch_page("app_pages/prune.py")     # AppTest's next run starts from its own page; the browser stays
    at.button(key="prune_go").click().run()
    assert_clean(at)
    working = dashboard(at).working
    assert working.steps[-1].layers == {1: ["block"], 4: ["block"]} and not working.steps[-1].neurons
    assert working.blocks() == [0, 2, 3, 5] and len(working.model.transformer.h) == 4
    assert parameters(working.model) == expected
    assert at.table[0].value.loc["Parameters", "After"] == f"{expected:,}"
    assert dashboard(at).units.layers == ()                                 # the selection was used up

    reloaded = open_app("prune", query=url_of(at))                          # F5
    state = dashboard(reloaded)
    assert [s.to_dict() for s in state.working.steps] == working.history()
    assert parameters(state.working.model) == expected and state.working.blocks() == [0, 2, 3, 5]
    reloaded.button(key="prune_undo").click().run()                         # undo replays the rest: all back
    assert_clean(reloaded)
    assert parameters(dashboard(reloaded).working.model) == parameters(base)
    assert dashboard(reloaded).working.blocks() == list(range(6))


def test_a_neuron_rule_on_maps_removes_exactly_the_neurons_it_showed():
    loaded = load_model(None)
    magnitude = compute_scores(loaded.model, ["magnitude"], kind="neuron")["magnitude"]
    wanted = {layer: sorted(torch.argsort(magnitude.values[layer], stable=True)[:256].tolist()) for layer in (0, 2)}
    at = open_app("head_maps")
    at.segmented_control(key="maps_kind").set_value("neuron").run()
    at.multiselect(key="neuron_rule_layers").set_value([0, 2]).run()
    at.slider(key="neuron_rule_share").set_value(0.25).run()
    assert_clean(at)
    units = dashboard(at).units
    assert {layer: list(n) for layer, n in units.neurons.items()} == wanted   # the lowest 25% by magnitude
    assert any("Selected per layer: layer 0: 256 of 1024 (25%); layer 2: 256 of 1024 (25%)" in c.value
               for c in at.caption)
    grid = [c for c in at.get("vega_lite_chart") if "#ff2b2b" in c.proto.spec]
    assert grid                                                              # outlined in red (a selection)

    at.segmented_control(key="neuron_map_metric").set_value("activation").run()     # the rule follows the metric
    assert_clean(at)
    assert dashboard(at).units.rule.metric == "activation" and dashboard(at).units.neuron_count() == 512
    assert {layer: list(n) for layer, n in dashboard(at).units.neurons.items()} != wanted
    at.switch_page("app_pages/prune.py").run()                                       # away and back: kept
    at.switch_page("app_pages/head_maps.py").run()
    at.segmented_control(key="maps_kind").set_value("neuron").run()
    assert at.segmented_control(key="neuron_map_metric").value == "activation"
    assert at.slider(key="neuron_rule_share").value == 0.25
    assert at.multiselect(key="neuron_rule_layers").value == [0, 2]
    at.segmented_control(key="neuron_map_metric").set_value("magnitude").run()
    assert {layer: list(n) for layer, n in dashboard(at).units.neurons.items()} == wanted

    at.switch_page("app_pages/head_maps.py")
    link = at.button(key="remove_selected_neurons")
    assert link.label == "Remove these 512 neurons"
    link.click().run()
    assert_clean(at)
    assert at.radio(key="prune_how").value == "selection"
    assert any("Selected neurons:** 512" in m.value for m in at.markdown)
    at.switch_page("app_pages/prune.py")
    at.button(key="prune_go").click().run()
    assert_clean(at)
    working = dashboard(at).working
    assert working.steps[-1].neurons == wanted and not working.steps[-1].layers
    present = present_neurons(working.model)
    for layer in range(6):
        gone = set(range(1024)) - set(present[layer])
        assert gone == set(wanted.get(layer, []))
    mlp = loaded.model.transformer.h[0].mlp                 # one neuron: a c_fc column and bias, a c_proj row
    per_neuron = mlp.c_fc.weight.shape[0] + 1 + mlp.c_proj.weight.shape[1]
    assert parameters(working.model) == parameters(loaded.model) - 512 * per_neuron
