"""The dashboard neither loses nor misstates what the user did (issue 22): loading another model keeps the session's
work as a run and asks first; the preview after a prune says why the same settings cannot prune again; selections
survive a prune unless their units went; the head looked inside is the one the selector shows."""

from __future__ import annotations

import re

from sentinel.pruning.strategies import heads_for_ratio
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
