"""Head plans: {layer: [heads]} in original indices, validated against a model's layout."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sentinel.errors import InvalidPruningPlan

HeadPlan = dict[int, list[int]]
PlanLike = Mapping[int | str, Iterable[int]] | Iterable[tuple[int, int]]


def normalize_plan(plan: PlanLike, num_layers: int, num_heads: int) -> HeadPlan:
    """Turn {layer: heads} or [(layer, head), ...] into a sorted {layer: [heads]}; out-of-range is an error."""
    pairs: list[tuple[int, int]] = []
    if isinstance(plan, Mapping):
        for layer, heads in plan.items():
            pairs.extend((_as_int(layer, "layer"), _as_int(h, "head")) for h in heads)
    else:
        for item in plan:
            try:
                layer, head = item
            except (TypeError, ValueError):
                raise InvalidPruningPlan(
                    f"Plan entry {item!r} is not a (layer, head) pair; pass {{layer: [heads]}} or [(layer, head), ...]."
                ) from None
            pairs.append((_as_int(layer, "layer"), _as_int(head, "head")))
    result: HeadPlan = {}
    for layer, head in pairs:
        if not 0 <= layer < num_layers:
            raise InvalidPruningPlan(f"Layer {layer} is out of range: this model has layers 0-{num_layers - 1}.")
        if not 0 <= head < num_heads:
            raise InvalidPruningPlan(f"Head {head} (layer {layer}) is out of range: each layer has heads 0-{num_heads - 1}.")
        result.setdefault(layer, [])
        if head not in result[layer]:
            result[layer].append(head)
    return {layer: sorted(heads) for layer, heads in sorted(result.items())}


def parse_plan_text(text: str) -> HeadPlan:
    """Parse the CLI form "0:1,3;5:0" (layer:heads separated by ';') into {0: [1, 3], 5: [0]}."""
    plan: HeadPlan = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        layer_text, sep, heads_text = part.partition(":")
        if not sep or not heads_text.strip():
            raise InvalidPruningPlan(f"Cannot read {part!r}: write heads as 'layer:head,head;layer:head', e.g. '0:1,3;5:0'.")
        layer = _as_int(layer_text.strip(), "layer")
        plan.setdefault(layer, []).extend(_as_int(h.strip(), "head") for h in heads_text.split(","))
    if not plan:
        raise InvalidPruningPlan("The head list is empty: write heads as 'layer:head,head;layer:head', e.g. '0:1,3;5:0'.")
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
