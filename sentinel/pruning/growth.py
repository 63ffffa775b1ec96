"""Growth: bring pruned heads (or MLP neurons) back as fresh, trainable units that fade in.

A masked head gets new small-scale Q/K/V/O weights and is unmasked; a removed head gets new weight
slices (`insert_units`, the inverse of removal, derived from the adapter's declaration) and rejoins
the present units of the model's pruning state. Neurons grow the same way (`grow_neurons`).
Either way it starts at a small gate value and fades in linearly to 1 over `warmup_steps` optimizer
steps (`advance_growth`, called by the fine-tuner after every step), so it starts near zero
contribution and cannot jolt the model. While fading, its updates can be scaled by `lr_multiplier`
(applied by the fine-tuner; see sentinel.training.callbacks.HeadSliceGuard).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sentinel.errors import InvalidPruningPlan
from sentinel.models.state import ModelState, model_state
from sentinel.pruning.plan import HeadPlan, PlanLike, normalize_plan

logger = logging.getLogger(__name__)


@dataclass
class HeadFade:
    """One grown unit fading in: its gate is (step + 1) / (warmup_steps + 1) until that reaches 1."""

    layer: int
    head: int                   # the unit's original index (a neuron's, for kind "neuron")
    warmup_steps: int
    lr_multiplier: float = 1.0
    step: int = 0
    kind: str = "head"

    @property
    def gate(self) -> float:
        return min(1.0, (self.step + 1) / (self.warmup_steps + 1))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GrowthResult:
    """What `grow_heads` did, in original head indices."""

    reinitialised: HeadPlan    # were masked: fresh weights, unmasked
    added: HeadPlan            # were removed: new weight slices
    warmup_steps: int
    init_std: float
    lr_multiplier: float

    @property
    def grown(self) -> HeadPlan:
        merged: HeadPlan = {}
        for plan in (self.reinitialised, self.added):
            for layer, heads in plan.items():
                merged[layer] = sorted({*merged.get(layer, []), *heads})
        return dict(sorted(merged.items()))

    def to_dict(self) -> dict:
        return {
            "reinitialised": {str(k): v for k, v in self.reinitialised.items()},
            "added": {str(k): v for k, v in self.added.items()},
            "warmup_steps": self.warmup_steps, "init_std": self.init_std, "lr_multiplier": self.lr_multiplier,
        }

    @classmethod
    def from_dict(cls, data: dict) -> GrowthResult:
        return cls(
            reinitialised={int(k): list(v) for k, v in data["reinitialised"].items()},
            added={int(k): list(v) for k, v in data["added"].items()},
            warmup_steps=data["warmup_steps"], init_std=data["init_std"], lr_multiplier=data["lr_multiplier"],
        )


def growing_heads(model: nn.Module) -> list[HeadFade]:
    """Units still fading in (the fine-tuner advances them and may boost their learning rate)."""
    return model_state(model).state.growing


def grow_heads(
    model: nn.Module,
    plan: PlanLike,
    warmup_steps: int = 50,
    init_std: float | None = None,
    lr_multiplier: float = 1.0,
    seed: int = 0,
) -> GrowthResult:
    """Re-initialise masked heads and re-add removed heads of `plan`, each fading in over `warmup_steps`.

    `init_std` defaults to the model's `initializer_range` (0.02 for most families); new Q/K/V/O weights
    are drawn from N(0, init_std) with a generator seeded by `seed`, biases start at 0.
    """
    return _grow(model, "head", plan, warmup_steps, init_std, lr_multiplier, seed)


def grow_neurons(
    model: nn.Module,
    plan: PlanLike,
    warmup_steps: int = 50,
    init_std: float | None = None,
    lr_multiplier: float = 1.0,
    seed: int = 0,
) -> GrowthResult:
    """As `grow_heads`, for MLP neurons {layer: [neurons]}: fresh input rows and output column, fading in."""
    return _grow(model, "neuron", plan, warmup_steps, init_std, lr_multiplier, seed)


def _grow(model: nn.Module, kind: str, plan: PlanLike, warmup_steps: int, init_std: float | None,
          lr_multiplier: float, seed: int) -> GrowthResult:
    if warmup_steps < 0:
        raise InvalidPruningPlan(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if lr_multiplier <= 0:
        raise InvalidPruningPlan(f"lr_multiplier must be > 0, got {lr_multiplier}.")
    state = model_state(model)
    wanted = normalize_plan(plan, state.num_layers, state.total(kind), what=kind)
    std = float(init_std if init_std is not None else getattr(model.config, "initializer_range", 0.02))
    reinit: HeadPlan = {}
    added: HeadPlan = {}
    for layer, targets in wanted.items():
        present, masked = state.present(layer, kind), state.masked(layer, kind)
        active = [u for u in targets if u in present and u not in masked]
        if active:
            raise InvalidPruningPlan(f"Layer {layer} {kind}s {active} are active; only masked or removed {kind}s "
                                     "can grow.")
        if not state.block_present(layer):
            raise InvalidPruningPlan(f"Layer {layer}'s block was removed; its {kind}s cannot grow back.")
        if [u for u in targets if u in masked]:
            reinit[layer] = [u for u in targets if u in masked]
        if [u for u in targets if u not in present]:
            added[layer] = [u for u in targets if u not in present]
    if kind == "head":
        _check_kv_groups(state, added)
    generator = torch.Generator().manual_seed(seed)
    for layer in sorted(set(reinit) | set(added)):
        if added.get(layer):
            state.insert(layer, kind, added[layer])
        new = sorted(reinit.get(layer, []) + added.get(layer, []))
        state.unmask(kind, {layer: reinit.get(layer, [])})
        _initialise(state, kind, layer, new, std, generator)
    grown = {layer: sorted(reinit.get(layer, []) + added.get(layer, [])) for layer in sorted(set(reinit) | set(added))}
    fades = growing_heads(model)
    fades[:] = [f for f in fades if not (f.kind == kind and f.head in grown.get(f.layer, []))]
    if warmup_steps > 0:
        fades.extend(HeadFade(layer, unit, warmup_steps, lr_multiplier, kind=kind)
                     for layer, units in grown.items() for unit in units)
    state.set_scales(kind, {layer: {u: 1.0 / (warmup_steps + 1) for u in units} for layer, units in grown.items()})
    result = GrowthResult(reinit, added, warmup_steps, std, lr_multiplier)
    state.record("grow", kind, grown, {"warmup_steps": warmup_steps, "init_std": std, "reinitialised": len(
        [u for us in reinit.values() for u in us]), "added": len([u for us in added.values() for u in us])})
    logger.info("Grew %d %ss (%d re-initialised, %d re-added), fading in over %d steps",
                sum(map(len, grown.values())), kind, sum(map(len, reinit.values())), sum(map(len, added.values())),
                warmup_steps)
    return result


def choose_heads_to_grow(model: nn.Module, counts: Mapping[int, int], pruned: PlanLike, seed: int = 0) -> HeadPlan:
    """Which heads to grow given per-layer counts (as `select_heads_to_grow` returns them).

    Per layer, a seeded random choice among that layer's `pruned` heads that are inactive now. Removed
    heads of a grouped-query model come back a whole K/V group at a time, so a layer may get fewer
    than its count when a whole group does not fit.
    """
    heads = model_state(model)
    wanted = normalize_plan(pruned, heads.num_layers, heads.num_heads)
    generator = torch.Generator().manual_seed(seed)
    size = heads.kv_group_size
    plan: HeadPlan = {}
    for layer, count in sorted(counts.items()):
        present, masked = heads.present(layer), heads.masked(layer)
        inactive = [h for h in wanted.get(layer, []) if h not in present or h in masked]
        units: list[list[int]] = []
        for head in inactive:
            first = (head // size) * size
            unit = [head] if head in present else [h for h in range(first, first + size) if h not in present]
            if unit not in units:
                units.append(unit)
        chosen: list[int] = []
        for index in torch.randperm(len(units), generator=generator).tolist():
            if len(chosen) + len(units[index]) <= count:
                chosen += units[index]
        if chosen:
            plan[layer] = sorted(chosen)
    return plan


def advance_growth(model: nn.Module, steps: int = 1) -> list[HeadFade]:
    """Move every fading unit `steps` optimizer steps on; units whose gate reaches 1 stop fading. Returns the rest."""
    fades = growing_heads(model)
    if not fades:
        return fades
    state = model_state(model)
    scales: dict[str, dict[int, dict[int, float]]] = {}
    for fade in fades:
        fade.step += steps
        if fade.head in state.active(fade.layer, fade.kind):
            scales.setdefault(fade.kind, {}).setdefault(fade.layer, {})[fade.head] = fade.gate
    fades[:] = [f for f in fades if f.gate < 1.0 and f.head in scales.get(f.kind, {}).get(f.layer, {})]
    for kind, per_layer in scales.items():
        state.set_scales(kind, per_layer)
    return fades


def _check_kv_groups(heads: ModelState, added: HeadPlan) -> None:
    """Grouped-query attention: after growth every K/V group of a layer must hold the same number of query
    heads (a whole removed group comes back whole; evenly thinned groups grow back evenly)."""
    size = heads.kv_group_size
    if size == 1:
        return
    problems = []
    for layer, targets in added.items():
        present = set(heads.present(layer)) | set(targets)
        sizes = {kv: sum(1 for h in present if h // size == kv) for kv in sorted({h // size for h in present})}
        if len(set(sizes.values())) > 1:
            problems.append(f"layer {layer}: K/V groups would hold {list(sizes.values())} query heads")
    if problems:
        raise InvalidPruningPlan("Grouped-query attention: removed query heads that share a K/V head can only "
                                 "grow back together, leaving every K/V group of a layer the same size ("
                                 + "; ".join(problems) + ").")


def _initialise(state: ModelState, kind: str, layer: int, new: list[int], std: float,
                generator: torch.Generator) -> None:
    """Fresh N(0, std) weights for `new` units; biases to 0. Heads keep a K/V head another present head shares."""
    size = state.kv_group_size
    shared_kv = {h // size for h in state.present(layer) if h not in new} if kind == "head" else set()
    with torch.no_grad():
        for unit in new:
            views = state.views(layer, kind, unit)
            skip = {"k", "v", "k_bias", "v_bias"} if kind == "head" and unit // size in shared_kv else set()
            order = ["q", "o", "k", "v"] if kind == "head" else list(views)   # the draw order of earlier releases
            for role in order + [r for r in views if r not in order]:
                view = views.get(role)
                if role in skip or view is None:
                    continue
                if role.endswith("_bias"):
                    view.zero_()
                else:
                    view.copy_(torch.randn(view.shape, generator=generator) * std)
