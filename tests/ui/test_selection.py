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
