"""Head plans: {layer: [heads]} in original indices, validated against a model's layout."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sentinel.errors import InvalidPruningPlan


HeadKey = tuple[int, int]   # (layer, head), original indices


def head_label(key: HeadKey) -> str:
    """'L{layer} H{head}', the name a head has everywhere (dashboard, charts)."""
    return f"L{key[0]} H{key[1]}"

HeadPlan = dict[int, list[int]]
PlanLike = Mapping[int | str, Iterable[int]] | Iterable[tuple[int, int]]


def normalize_plan(plan: PlanLike, num_layers: int, num_heads: int, what: str = "head") -> HeadPlan:
    """Turn {layer: units} or [(layer, unit), ...] into a sorted {layer: [units]}; out-of-range is an error.

    `what` names the unit kind in messages ("head", "neuron").
    """
    pairs: list[tuple[int, int]] = []
    if isinstance(plan, Mapping):
        for layer, heads in plan.items():
            pairs.extend((_as_int(layer, "layer"), _as_int(h, what)) for h in heads)
    else:
        for item in plan:
            try:
                layer, head = item
            except (TypeError, ValueError):
                raise InvalidPruningPlan(
                    f"Plan entry {item!r} is not a (layer, {what}) pair; pass {{layer: [{what}s]}} or "
                    f"[(layer, {what}), ...]."
                ) from None
            pairs.append((_as_int(layer, "layer"), _as_int(head, what)))
    result: HeadPlan = {}
    for layer, head in pairs:
        if not 0 <= layer < num_layers:
            raise InvalidPruningPlan(f"Layer {layer} is out of range: this model has layers 0-{num_layers - 1}.")
        if not 0 <= head < num_heads:
            raise InvalidPruningPlan(f"{what.capitalize()} {head} (layer {layer}) is out of range: each layer has "
                                     f"{what}s 0-{num_heads - 1}.")
        result.setdefault(layer, [])
        if head not in result[layer]:
            result[layer].append(head)
    return {layer: sorted(heads) for layer, heads in sorted(result.items())}


def parse_plan_text(text: str, what: str = "head") -> HeadPlan:
    """Parse the CLI form "0:1,3;5:0" (layer:units separated by ';') into {0: [1, 3], 5: [0]}."""
    plan: HeadPlan = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        layer_text, sep, heads_text = part.partition(":")
        if not sep or not heads_text.strip():
            raise InvalidPruningPlan(f"Cannot read {part!r}: write {what}s as 'layer:{what},{what};layer:{what}', "
                                     "e.g. '0:1,3;5:0'.")
        layer = _as_int(layer_text.strip(), "layer")
        plan.setdefault(layer, []).extend(_as_int(h.strip(), what) for h in heads_text.split(","))
    if not plan:
        raise InvalidPruningPlan(f"The {what} list is empty: write {what}s as 'layer:{what},{what};layer:{what}', "
                                 "e.g. '0:1,3;5:0'.")
    return plan


def plan_to_pairs(plan: HeadPlan) -> list[tuple[int, int]]:
    return [(layer, head) for layer, heads in sorted(plan.items()) for head in heads]


def plan_to_json(plan: HeadPlan) -> dict[str, list[int]]:
    return {str(layer): list(heads) for layer, heads in sorted(plan.items()) if heads}


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidPruningPlan(f"{what.capitalize()} index {value!r} is not an integer.")
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidPruningPlan(f"{what.capitalize()} index {value!r} is not an integer.") from None


# --- mixed plans: heads, neurons and layers together ------------------------------------------------

NeuronPlan = dict[int, list[int]]
LayerPlan = dict[int, list[str]]
LAYER_PARTS = ("block", "attention", "mlp")


class PruneMode(str, Enum):
    """How a plan is applied: MASK gates units off reversibly, REMOVE cuts them out of the weights."""

    MASK = "mask"
    REMOVE = "remove"

    @classmethod
    def parse(cls, value: PruneMode | str) -> PruneMode:
        try:
            return cls(value)
        except ValueError:
            raise InvalidPruningPlan(f"Unknown mode {value!r}; use 'mask' or 'remove'.") from None


@dataclass
class PruningPlan:
    """What to prune, by unit kind, in original indices: heads {layer: [heads]}, neurons {layer: [neurons]},
    layers {layer: ["block"] or parts among "attention", "mlp"}."""

    heads: HeadPlan = field(default_factory=dict)
    neurons: NeuronPlan = field(default_factory=dict)
    layers: LayerPlan = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (any(self.heads.values()) or any(self.neurons.values()) or any(self.layers.values()))

    def counts(self) -> dict[str, int]:
        """Units per kind: heads, neurons, and layer entries (a block or a part counts one)."""
        return {"heads": sum(map(len, self.heads.values())), "neurons": sum(map(len, self.neurons.values())),
                "layers": sum(map(len, self.layers.values()))}

    def to_dict(self) -> dict[str, Any]:
        return {"heads": plan_to_json(self.heads), "neurons": plan_to_json(self.neurons),
                "layers": {str(k): list(v) for k, v in sorted(self.layers.items()) if v}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningPlan:
        return as_pruning_plan(data)


MixedPlanLike = PruningPlan | Mapping[str, Any] | PlanLike


def as_pruning_plan(plan: MixedPlanLike) -> PruningPlan:
    """A PruningPlan from a PruningPlan, a mixed {"heads": ..., "neurons": ..., "layers": ...} mapping, or a
    plain head plan (indices are checked against a model later, in `apply_plan`)."""
    if isinstance(plan, PruningPlan):
        return plan
    if isinstance(plan, Mapping) and plan and all(isinstance(k, str) and not k.lstrip("-").isdigit() for k in plan):
        unknown = set(plan) - {"heads", "neurons", "layers"}
        if unknown:
            raise InvalidPruningPlan(f"Unknown plan keys {sorted(unknown)}; a mixed plan has 'heads', 'neurons' "
                                     "and 'layers'.")
        return PruningPlan(_pairs_plan(plan.get("heads") or {}, "head"), _pairs_plan(plan.get("neurons") or {}, "neuron"),
                           normalize_layers(plan.get("layers") or {}))
    return PruningPlan(heads=_pairs_plan(plan, "head"))


def _pairs_plan(plan: PlanLike, what: str) -> dict[int, list[int]]:
    """{layer: sorted units} without range checks (the model is not known yet)."""
    return normalize_plan(plan, 1 << 30, 1 << 30, what)


def normalize_layers(layers: Any) -> LayerPlan:
    """{layer: ["block"] | parts} from [layer, ...] (whole blocks), [(layer, part), ...], {layer: part(s)} or
    the CLI text "4,7:mlp"."""
    if isinstance(layers, str):
        return parse_layers_text(layers)
    items: list[tuple[Any, Any]] = []
    if isinstance(layers, Mapping):
        for layer, parts in layers.items():
            for part in ([parts] if isinstance(parts, str) else parts):
                items.append((layer, part))
    else:
        for item in layers:
            items.append(tuple(item) if isinstance(item, (tuple, list)) else (item, "block"))  # type: ignore[arg-type]
    result: LayerPlan = {}
    for entry in items:
        if len(entry) != 2:
            raise InvalidPruningPlan(f"Layer entry {entry!r} is not a layer or a (layer, part) pair.")
        layer, part = _as_int(entry[0], "layer"), str(entry[1])
        if part not in LAYER_PARTS:
            raise InvalidPruningPlan(f"Layer part {part!r} is not one of {', '.join(LAYER_PARTS)}.")
        parts = result.setdefault(layer, [])
        if part not in parts:
            parts.append(part)
    for layer, parts in result.items():
        result[layer] = ["block"] if "block" in parts else sorted(parts, key=LAYER_PARTS.index)
    return dict(sorted(result.items()))


def parse_layers_text(text: str) -> LayerPlan:
    """Parse the CLI form "4,7:mlp,9:attention" (a bare layer is its whole block) into {4: ["block"], 7: ["mlp"], ...}."""
    items = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        layer, sep, which = part.partition(":")
        items.append((layer.strip(), which.strip() if sep else "block"))
    if not items:
        raise InvalidPruningPlan("The layer list is empty: write layers as 'layer[:part],...', e.g. '4,7:mlp'.")
    return normalize_layers(items)
