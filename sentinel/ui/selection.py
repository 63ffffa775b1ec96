"""Heat-map clicks → selected heads (and bar clicks → selected layers): a plain click selects one unit, a
shift-click toggles one more. MLP neurons are too many to click: they are selected by a rule (`NeuronRule`).

Streamlit reports a chart's point selection as the points Vega-Lite holds *now*, not as the click
that changed them, and the browser's copy can drift from ours (the chart is redrawn after pruning,
or the list widget edits the selection). So each event is read as a change against the points of
the previous event: one point more or one point fewer is a shift-click (add or drop that head);
anything else is a plain click (that head alone) or a click on empty space (nothing selected).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from sentinel.errors import InvalidPruningPlan
from sentinel.metrics.scores import UnitScores
from sentinel.pruning.plan import (HeadKey, HeadPlan, NeuronPlan, PruningPlan, head_label, normalize_plan,
                                   plan_to_pairs)
from sentinel.pruning.strategies import heads_for_ratio

Key = TypeVar("Key", bound=Hashable)

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
    return HeadSelection(_allowed(fold_event(selection.heads, selection.seen, event), selectable), event)


def fold_event(current: Iterable[Key], seen: Iterable[Key], event: Iterable[Key]) -> set[Key]:
    """The units selected after a chart event `event`, given those selected (`current`) and the chart's points at
    the previous event (`seen`): one point more or fewer is a shift-click, anything else a plain click."""
    seen, event, chosen = set(seen), set(event), set(current)
    added, dropped = event - seen, seen - event
    if seen and added and not dropped and len(added) == 1:
        return chosen | added                 # shift-click on a new unit
    if event and dropped and not added and len(dropped) == 1:
        return chosen - dropped               # shift-click on a selected unit
    return event                              # plain click, or a click on empty space


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


# --- layers and neurons ------------------------------------------------------------------------------------------

NEURON_RULE_MAX = 0.9          # a rule never empties a layer's MLP (remove the layer's MLP part for that)


@dataclass(frozen=True)
class NeuronRule:
    """'The lowest `share` of the neurons by `metric`' in `layers` (empty: every layer), among each layer's active
    neurons."""

    metric: str
    share: float
    layers: tuple[int, ...] = ()

    def describe(self) -> str:
        where = "every layer" if not self.layers else \
            ("layer " if len(self.layers) == 1 else "layers ") + ", ".join(map(str, self.layers))
        return f"the lowest {self.share:.0%} of the neurons by {self.metric} in {where}"


@dataclass(frozen=True)
class UnitSelection:
    """The whole blocks (`layers`, sorted) and MLP neurons (`neurons`, {layer: sorted original indices}, chosen by
    `rule`) a session has picked beside its heads; `seen` is the layer-bar chart's points at its last event."""

    layers: tuple[int, ...] = ()
    seen: tuple[int, ...] = ()
    neurons: dict[int, tuple[int, ...]] = field(default_factory=dict)
    rule: NeuronRule | None = None

    def is_empty(self) -> bool:
        return not self.layers and not any(self.neurons.values())

    def neuron_count(self) -> int:
        return sum(map(len, self.neurons.values()))

    def neuron_plan(self) -> NeuronPlan:
        return {layer: list(units) for layer, units in sorted(self.neurons.items()) if units}


def selection_plan(heads: HeadSelection, units: UnitSelection) -> PruningPlan:
    """Everything a session has selected, as one engine plan (layers as whole blocks), original indices."""
    return PruningPlan(heads.as_plan(), units.neuron_plan(), {layer: ["block"] for layer in units.layers})


def points_to_layers(points: Iterable[Mapping[str, object]], num_layers: int) -> tuple[int, ...]:
    """Vega-Lite selection points [{"layer": 2}, ...] → sorted unique layers; one outside the model is an error."""
    layers = sorted({_whole(point["layer"]) for point in points})
    for layer in layers:
        if not isinstance(layer, int) or not 0 <= layer < num_layers:
            raise InvalidPruningPlan(f"Layer {layer!r} from the chart is not a layer of this model "
                                     f"(0-{num_layers - 1}).")
    return tuple(layers)


def apply_layer_event(selection: UnitSelection, points: Iterable[Mapping[str, object]], num_layers: int,
                      selectable: Iterable[int] | None = None) -> UnitSelection:
    """The selection after one click on the layer bars (the same click rules as the head map's)."""
    event = points_to_layers(points, num_layers)
    if event == selection.seen:
        return selection
    chosen = fold_event(selection.layers, selection.seen, event)
    return UnitSelection(_allowed(chosen, selectable), event, selection.neurons, selection.rule)


def set_layers(selection: UnitSelection, layers: Iterable[int], selectable: Iterable[int] | None = None
               ) -> UnitSelection:
    """The layer selection edited directly (the list under the bars), keeping what the chart last reported."""
    return UnitSelection(_allowed(set(layers), selectable), selection.seen, selection.neurons, selection.rule)


def forget_layer_clicks(selection: UnitSelection) -> UnitSelection:
    """As `forget_seen`, for the layer bars drawn afresh."""
    return UnitSelection(selection.layers, (), selection.neurons, selection.rule)


def neurons_by_rule(scores: UnitScores, rule: NeuronRule) -> dict[int, tuple[int, ...]]:
    """Per chosen layer, its `round(share × active)` lowest-scoring active neurons (ties: the lower index first),
    never all of them; scores are `rule.metric`'s, NaN for neurons already pruned."""
    if scores.metric != rule.metric:
        raise InvalidPruningPlan(f"The neuron rule ranks by {rule.metric}, but the scores are {scores.metric}.")
    if not 0.0 <= rule.share <= NEURON_RULE_MAX:
        raise InvalidPruningPlan(f"A neuron rule takes 0 to {NEURON_RULE_MAX:.0%} of a layer's neurons, got "
                                 f"{rule.share:.0%}; to drop a whole MLP, remove the layer instead.")
    bad = [layer for layer in rule.layers if not 0 <= layer < scores.num_layers]
    if bad:
        raise InvalidPruningPlan(f"Layers {bad} are not in this model (0-{scores.num_layers - 1}).")
    chosen: dict[int, tuple[int, ...]] = {}
    for layer in rule.layers or range(scores.num_layers):
        values = scores.values[layer]
        alive = torch.nonzero(~torch.isnan(values)).flatten()
        count = min(heads_for_ratio(rule.share, alive.numel()), max(alive.numel() - 1, 0))
        if count:
            order = torch.argsort(values[alive], stable=True)          # alive is ascending: ties keep index order
            chosen[layer] = tuple(sorted(alive[order[:count]].tolist()))
    return chosen


def set_neurons(selection: UnitSelection, neurons: Mapping[int, Iterable[int]], rule: NeuronRule | None
                ) -> UnitSelection:
    """The neuron selection replaced (a rule was set or changed; `rule` None and no neurons clears it)."""
    kept = {int(layer): tuple(sorted(units)) for layer, units in neurons.items() if units}
    return UnitSelection(selection.layers, selection.seen, kept, rule)


def keep_present(selection: UnitSelection, blocks: Iterable[int], neurons: Mapping[int, Iterable[int]]
                 ) -> UnitSelection:
    """The selection without the layers and neurons no longer active in the model (another step took them):
    `blocks` are the selectable layers, `neurons` each layer's active neurons."""
    live = {layer: set(units) for layer, units in neurons.items()}
    kept = {layer: tuple(n for n in units if n in live.get(layer, ())) for layer, units in selection.neurons.items()}
    return UnitSelection(_allowed(set(selection.layers), blocks), selection.seen,
                         {layer: units for layer, units in kept.items() if units}, selection.rule)


@dataclass(frozen=True)
class KeptSelection:
    """A selection after a pruning step that did not prune it: what still refers to active units (`heads`, `units`)
    and, as people read them, the parts dropped because the step pruned their units (`dropped`)."""

    heads: HeadSelection
    units: UnitSelection
    dropped: tuple[str, ...] = ()

    def note(self) -> str | None:
        """Which parts of the selection went and why (None: all of it is kept)."""
        if not self.dropped:
            return None
        return ("Dropped from your selection: " + "; ".join(self.dropped) + ". The last pruning step pruned them, "
                "so they cannot be pruned again. The rest of your selection is kept.")


def keep_existing(heads: HeadSelection, units: UnitSelection, active: Iterable[HeadKey], blocks: Iterable[int],
                  neurons: Mapping[int, Iterable[int]]) -> KeptSelection:
    """The selection without the heads, layers and neurons no longer active (`active` heads, selectable `blocks`,
    each layer's active `neurons`), naming what went. A neuron rule whose neurons were partly pruned no longer
    describes those left, so it is dropped too (the neurons left stay selected)."""
    active, blocks = set(active), set(blocks)
    kept_heads = tuple(key for key in heads.heads if key in active)
    gone_heads = [key for key in heads.heads if key not in active]
    kept_layers = tuple(layer for layer in units.layers if layer in blocks)
    gone_layers = [layer for layer in units.layers if layer not in blocks]
    live = {layer: set(found) for layer, found in neurons.items()}
    kept_neurons = {layer: tuple(n for n in chosen if n in live.get(layer, ()))
                    for layer, chosen in units.neurons.items()}
    gone_neurons = {layer: len(chosen) - len(kept_neurons[layer]) for layer, chosen in units.neurons.items()}
    gone_neurons = {layer: count for layer, count in sorted(gone_neurons.items()) if count}
    dropped = []
    if gone_heads:
        dropped.append(("head " if len(gone_heads) == 1 else "heads ") + ", ".join(map(head_label, gone_heads)))
    if gone_layers:
        dropped.append(("layer " if len(gone_layers) == 1 else "layers ") + ", ".join(map(str, gone_layers)))
    rule = units.rule
    if gone_neurons:
        count = sum(gone_neurons.values())
        where = ", ".join(f"layer {layer}: {n:,}" for layer, n in gone_neurons.items())
        dropped.append(f"{count:,} neuron{'s' if count != 1 else ''} ({where})"
                       + (f" — so the rule '{rule.describe()}' no longer describes the neurons left; set it again "
                          "on Maps → MLP neurons to select by it" if rule is not None else ""))
        rule = None
    return KeptSelection(HeadSelection(kept_heads, heads.seen),
                         UnitSelection(kept_layers, units.seen,
                                       {layer: n for layer, n in kept_neurons.items() if n}, rule),
                         tuple(dropped))
