"""Cell clicks → selected heads: plain click, shift-click add/drop, empty click, stale events, pruned heads."""

import pytest

from sentinel.errors import InvalidPruningPlan
from sentinel.ui.selection import (
    HeadSelection, apply_chart_event, forget_seen, head_label, parse_head_label, points_to_heads, set_heads,
)

L, H = 3, 4


def pts(*pairs):
    return [{"layer": layer, "head": head} for layer, head in pairs]


def test_plain_click_on_nothing_selected_picks_that_head():
    after = apply_chart_event(HeadSelection(), pts((1, 2)), L, H)
    assert after == HeadSelection(heads=((1, 2),), seen=((1, 2),))


def test_shift_click_adds_a_head_and_keeps_the_list_sorted():
    start = HeadSelection(((1, 2),), ((1, 2),))
    after = apply_chart_event(start, pts((1, 2), (0, 3)), L, H)
    assert after.heads == ((0, 3), (1, 2))
    assert after.seen == ((0, 3), (1, 2))


def test_shift_click_on_a_selected_head_drops_only_that_head():
    # (2, 0) came from the list widget; the chart never knew it, so it must survive the drop of (0, 3).
    start = HeadSelection(((0, 3), (1, 2), (2, 0)), ((0, 3), (1, 2)))
    after = apply_chart_event(start, pts((1, 2)), L, H)
    assert after.heads == ((1, 2), (2, 0))


def test_plain_click_on_another_head_replaces_the_selection():
    start = HeadSelection(((0, 3), (1, 2)), ((0, 3), (1, 2)))
    assert apply_chart_event(start, pts((2, 1)), L, H).heads == ((2, 1),)


def test_click_on_empty_space_clears():
    start = HeadSelection(((0, 3), (1, 2)), ((0, 3), (1, 2)))
    after = apply_chart_event(start, [], L, H)
    assert after == HeadSelection((), ())


def test_a_rerun_that_repeats_the_last_event_changes_nothing():
    # The list widget removed (1, 2) after the chart reported it; the same chart value must not bring it back.
    start = HeadSelection(((0, 3),), ((0, 3), (1, 2)))
    assert apply_chart_event(start, pts((1, 2), (0, 3)), L, H) is start


def test_a_fresh_chart_reports_nothing_and_the_selection_survives():
    start = forget_seen(HeadSelection(((0, 3), (1, 2)), ((0, 3), (1, 2))))
    assert start.seen == ()
    assert apply_chart_event(start, [], L, H).heads == ((0, 3), (1, 2))


def test_shift_click_after_a_redraw_that_kept_the_selection_in_the_chart():
    # The redrawn chart starts from the current selection (its initial value), so the event is the full truth.
    start = HeadSelection(((0, 3), (1, 2), (2, 0)), ((0, 3),))
    after = apply_chart_event(start, pts((0, 3), (1, 2), (2, 0), (2, 3)), L, H)
    assert after.heads == ((0, 3), (1, 2), (2, 0), (2, 3))


def test_vega_floats_are_whole_heads():
    assert points_to_heads([{"layer": 2.0, "head": 1.0}], L, H) == ((2, 1),)


def test_a_point_outside_the_model_is_refused():
    with pytest.raises(InvalidPruningPlan, match="out of range"):
        points_to_heads(pts((3, 0)), L, H)
    with pytest.raises(InvalidPruningPlan, match="not an integer"):
        points_to_heads([{"layer": 1.5, "head": 0}], L, H)


def test_pruned_heads_never_enter_the_selection():
    selectable = [(0, 0), (0, 1), (1, 2)]
    after = apply_chart_event(HeadSelection(((0, 1),), ((0, 1),)), pts((0, 1), (2, 2)), L, H, selectable)
    assert after.heads == ((0, 1),)
    assert after.seen == ((0, 1), (2, 2))
    assert set_heads(after, [(1, 2), (2, 3)], selectable).heads == ((1, 2),)


def test_plan_and_labels():
    selection = HeadSelection(((0, 3), (2, 0), (2, 1)))
    assert selection.as_plan() == {0: [3], 2: [0, 1]}
    assert selection.labels() == ["L0 H3", "L2 H0", "L2 H1"]
    assert all(parse_head_label(head_label(k)) == k for k in selection.heads)


# --- layers (clicked on the bars) and neurons (chosen by a rule) -------------------------------------------------

import math

import torch

from sentinel.metrics.scores import UnitScores
from sentinel.ui.selection import (
    NeuronRule, UnitSelection, apply_layer_event, forget_layer_clicks, keep_present, neurons_by_rule, selection_plan,
    set_layers, set_neurons,
)


def layer_pts(*layers):
    return [{"layer": layer} for layer in layers]


def test_layer_clicks_follow_the_head_map_rules():
    picked = apply_layer_event(UnitSelection(), layer_pts(2), 6)
    assert picked.layers == (2,)
    picked = apply_layer_event(picked, layer_pts(2, 4.0), 6)                  # shift-click adds (floats from Vega)
    assert picked.layers == (2, 4)
    picked = apply_layer_event(picked, layer_pts(4), 6)                       # shift-click on 2 drops it
    assert picked.layers == (4,)
    assert apply_layer_event(picked, layer_pts(1), 6).layers == (1,)          # a plain click replaces
    assert apply_layer_event(picked, [], 6).layers == ()                      # empty space clears
    fresh = forget_layer_clicks(UnitSelection((0, 3), (0, 3)))
    assert apply_layer_event(fresh, [], 6).layers == (0, 3)                   # a new chart's empty value keeps it
    assert apply_layer_event(UnitSelection(), layer_pts(1, 5), 6, selectable=[0, 1, 2]).layers == (1,)
    with pytest.raises(InvalidPruningPlan, match="not a layer of this model"):
        apply_layer_event(UnitSelection(), layer_pts(6), 6)


def test_editing_layers_keeps_the_neurons_and_the_chart_state():
    rule = NeuronRule("magnitude", 0.5, (1,))
    start = UnitSelection((0,), (0,), {1: (3, 4)}, rule)
    after = set_layers(start, [5, 2, 9], selectable=range(6))
    assert after == UnitSelection((2, 5), (0,), {1: (3, 4)}, rule)
    assert set_neurons(after, {}, None) == UnitSelection((2, 5), (0,), {}, None)


def scores_of(rows):
    return UnitScores("magnitude", torch.tensor(rows, dtype=torch.float64), kind="neuron")


def test_a_neuron_rule_takes_the_lowest_share_of_each_chosen_layers_active_neurons():
    nan = math.nan
    scores = scores_of([[5.0, 1.0, 3.0, 2.0, 4.0, 0.5, 9.0, 8.0],
                        [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0],            # ties: the lower index goes first
                        [nan, nan, 0.1, 0.2, 0.3, 0.4, nan, 0.5]])           # pruned neurons never count
    rule = NeuronRule("magnitude", 0.5)
    assert neurons_by_rule(scores, rule) == {0: (1, 2, 3, 5), 1: (0, 1, 2, 3), 2: (2, 3)}   # 4, 4, round(2.5)=2
    assert neurons_by_rule(scores, NeuronRule("magnitude", 0.25, (0, 2))) == {0: (1, 5), 2: (2,)}
    assert neurons_by_rule(scores, NeuronRule("magnitude", 0.0)) == {}
    one = scores_of([[nan, 3.0]])
    assert neurons_by_rule(one, NeuronRule("magnitude", 0.9)) == {}           # never a layer's last neuron
    with pytest.raises(InvalidPruningPlan, match="ranks by activation"):
        neurons_by_rule(scores, NeuronRule("activation", 0.5))
    with pytest.raises(InvalidPruningPlan, match="remove the layer instead"):
        neurons_by_rule(scores, NeuronRule("magnitude", 1.0))
    with pytest.raises(InvalidPruningPlan, match=r"Layers \[7\]"):
        neurons_by_rule(scores, NeuronRule("magnitude", 0.5, (7,)))


def test_units_another_step_took_leave_the_selection():
    rule = NeuronRule("magnitude", 0.1)
    start = UnitSelection((1, 3), (3,), {0: (2, 5), 2: (7,)}, rule)
    after = keep_present(start, blocks=[0, 1, 2], neurons={0: [5, 6], 1: [], 2: [1, 2]})
    assert after == UnitSelection((1,), (3,), {0: (5,)}, rule)


def test_the_selection_plan_joins_heads_neurons_and_blocks():
    units = UnitSelection((4, 1), (), {2: (7, 9)}, NeuronRule("magnitude", 0.1))
    plan = selection_plan(HeadSelection(((0, 1),), ()), units)
    assert (plan.heads, plan.neurons, plan.layers) == ({0: [1]}, {2: [7, 9]}, {4: ["block"], 1: ["block"]})
    assert plan.counts() == {"heads": 1, "neurons": 2, "layers": 2}


def test_the_page_address_carries_layers_neurons_and_the_rule_compactly():
    from sentinel.ui.state import ModelChoice, SessionSnapshot

    rule = NeuronRule("wanda", 0.3, (0, 5))
    neurons = {0: tuple(range(0, 1024, 3)), 5: tuple(range(1, 1024, 3))}
    snapshot = SessionSnapshot(ModelChoice(), units=UnitSelection((1, 3), (1,), neurons, rule))
    token = snapshot.encode()
    back = SessionSnapshot.decode(token).units
    assert back == UnitSelection((1, 3), (), neurons, rule)                    # chart state is not carried
    assert len(token) - len(SessionSnapshot(ModelChoice()).encode()) < 800      # bitmasks, not 683 numbers
    import base64
    import json

    plain = SessionSnapshot(ModelChoice()).encode()
    assert "u" not in json.loads(base64.urlsafe_b64decode(plain + "=" * (-len(plain) % 4)))    # none: no key
