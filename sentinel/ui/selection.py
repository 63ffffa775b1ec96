"""Heat-map clicks → selected heads: a plain click selects one head, a shift-click toggles one more.

Streamlit reports a chart's point selection as the points Vega-Lite holds *now*, not as the click
that changed them, and the browser's copy can drift from ours (the chart is redrawn after pruning,
or the list widget edits the selection). So each event is read as a change against the points of
the previous event: one point more or one point fewer is a shift-click (add or drop that head);
anything else is a plain click (that head alone) or a click on empty space (nothing selected).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sentinel.errors import InvalidPruningPlan
from sentinel.pruning.plan import HeadKey, HeadPlan, head_label, normalize_plan, plan_to_pairs

SELECTION_FIELDS = ("layer", "head")


@dataclass(frozen=True)
class HeadSelection:
    """The heads a session has picked (`heads`, sorted) and the chart points seen at the last event (`seen`)."""

    heads: tuple[HeadKey, ...] = ()
    seen: tuple[HeadKey, ...] = ()

    def as_plan(self) -> HeadPlan:
        """The selection as an engine plan {layer: [heads]} in original indices."""
        plan: HeadPlan = {}
        for layer, head in self.heads:
            plan.setdefault(layer, []).append(head)
        return plan

    def labels(self) -> list[str]:
        """Human labels such as 'L2 H5', in selection order."""
        return [head_label(key) for key in self.heads]


def parse_head_label(label: str) -> HeadKey:
    """Inverse of `head_label`."""
    layer_text, head_text = label.split()
    return int(layer_text.removeprefix("L")), int(head_text.removeprefix("H"))


def points_to_heads(points: Iterable[Mapping[str, object]], num_layers: int, num_heads: int) -> tuple[HeadKey, ...]:
    """Vega-Lite selection points [{"layer": 2, "head": 5}, ...] → sorted unique (layer, head) keys.

    Raises InvalidPruningPlan (via the engine's plan check) for a point outside the model.
    """
    pairs = [(_whole(point["layer"]), _whole(point["head"])) for point in points]
    return tuple(plan_to_pairs(normalize_plan(pairs, num_layers, num_heads)))


def apply_chart_event(
    selection: HeadSelection,
    points: Iterable[Mapping[str, object]],
    num_layers: int,
    num_heads: int,
    selectable: Iterable[HeadKey] | None = None,
) -> HeadSelection:
    """The selection after one chart event; heads outside `selectable` (e.g. already pruned) never enter it."""
    event = points_to_heads(points, num_layers, num_heads)
    if event == selection.seen:
        return selection
    added = set(event) - set(selection.seen)
    dropped = set(selection.seen) - set(event)
    current = set(selection.heads)
    if selection.seen and added and not dropped and len(added) == 1:
        current |= added                      # shift-click on a new head
    elif event and dropped and not added and len(dropped) == 1:
        current -= dropped                    # shift-click on a selected head
    else:
        current = set(event)                  # plain click, or a click on empty space
    return HeadSelection(_allowed(current, selectable), event)


def forget_seen(selection: HeadSelection) -> HeadSelection:
    """The selection when its chart widget is created afresh (page opened again): Streamlit then reports an
    empty selection that means 'no click yet', not 'cleared'."""
    return HeadSelection(selection.heads, ())


def set_heads(selection: HeadSelection, heads: Iterable[HeadKey], selectable: Iterable[HeadKey] | None = None) -> HeadSelection:
    """The selection edited directly (list widget, Prune page), keeping what the chart last reported."""
    return HeadSelection(_allowed(set(heads), selectable), selection.seen)


def _allowed(heads: set[HeadKey], selectable: Iterable[HeadKey] | None) -> tuple[HeadKey, ...]:
    if selectable is not None:
        heads &= set(selectable)
    return tuple(sorted(heads))


def _whole(value: object) -> int:
    """Vega-Lite may send numbers as floats (2.0); a head index must be a whole number."""
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidPruningPlan(f"Head index {value!r} from the chart is not an integer.")
        return int(value)
    return value  # type: ignore[return-value]  # normalize_plan rejects anything else that is not an int
