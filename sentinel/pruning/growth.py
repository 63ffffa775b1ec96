"""Growth: bring pruned heads back as fresh, trainable heads that fade in.

A masked head gets new small-scale Q/K/V/O weights and is unmasked; a removed head gets new weight
slices (the adapter's `insert_heads`, the inverse of `keep_heads`) and rejoins `sentinel_present`.
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
from sentinel.models.heads import ModelHeads, model_heads
from sentinel.pruning.masks import _record, refresh_gates, set_gate_scales
from sentinel.pruning.plan import HeadPlan, PlanLike, normalize_plan

logger = logging.getLogger(__name__)


@dataclass
class HeadFade:
    """One grown head fading in: its gate is (step + 1) / (warmup_steps + 1) until that reaches 1."""

    layer: int
    head: int
    warmup_steps: int
    lr_multiplier: float = 1.0
    step: int = 0

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
    """Heads still fading in (the fine-tuner advances them and may boost their learning rate)."""
    if not hasattr(model, "sentinel_growing"):
        model.sentinel_growing = []
    return model.sentinel_growing


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
    if warmup_steps < 0:
        raise InvalidPruningPlan(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if lr_multiplier <= 0:
        raise InvalidPruningPlan(f"lr_multiplier must be > 0, got {lr_multiplier}.")
    heads = model_heads(model)
    wanted = normalize_plan(plan, heads.num_layers, heads.num_heads)
    std = float(init_std if init_std is not None else getattr(model.config, "initializer_range", 0.02))
    reinit: HeadPlan = {}
    added: HeadPlan = {}
    for layer, targets in wanted.items():
        present, masked = heads.present(layer), heads.masked(layer)
        active = [h for h in targets if h in present and h not in masked]
        if active:
            raise InvalidPruningPlan(f"Layer {layer} heads {active} are active; only masked or removed heads can grow.")
        if [h for h in targets if h in masked]:
            reinit[layer] = [h for h in targets if h in masked]
        if [h for h in targets if h not in present]:
            added[layer] = [h for h in targets if h not in present]
    _check_kv_groups(heads, added)
    generator = torch.Generator().manual_seed(seed)
    for layer in sorted(set(reinit) | set(added)):
        if added.get(layer):
            _insert(heads, layer, added[layer])
        new = sorted(reinit.get(layer, []) + added.get(layer, []))
        masked = heads.masked(layer)
        for head in reinit.get(layer, []):
            masked.remove(head)
        _initialise(heads, layer, new, std, generator)
        refresh_gates(heads, [layer])
    grown = {layer: sorted(reinit.get(layer, []) + added.get(layer, [])) for layer in sorted(set(reinit) | set(added))}
    fades = growing_heads(model)
    fades[:] = [f for f in fades if f.head not in grown.get(f.layer, [])]
    if warmup_steps > 0:
        fades.extend(HeadFade(layer, head, warmup_steps, lr_multiplier) for layer, hs in grown.items() for head in hs)
    set_gate_scales(model, {layer: {h: 1.0 / (warmup_steps + 1) for h in hs} for layer, hs in grown.items()})
    result = GrowthResult(reinit, added, warmup_steps, std, lr_multiplier)
    _record(model, "grow", grown, {"warmup_steps": warmup_steps, "init_std": std, "reinitialised": len(
        [h for hs in reinit.values() for h in hs]), "added": len([h for hs in added.values() for h in hs])})
    logger.info("Grew %d heads (%d re-initialised, %d re-added), fading in over %d steps",
                sum(map(len, grown.values())), sum(map(len, reinit.values())), sum(map(len, added.values())),
                warmup_steps)
    return result


def choose_heads_to_grow(model: nn.Module, counts: Mapping[int, int], pruned: PlanLike, seed: int = 0) -> HeadPlan:
    """Which heads to grow given per-layer counts (as `select_heads_to_grow` returns them).

    Per layer, a seeded random choice among that layer's `pruned` heads that are inactive now. Removed
    heads of a grouped-query model come back a whole K/V group at a time, so a layer may get fewer
    than its count when a whole group does not fit.
    """
    heads = model_heads(model)
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
    """Move every fading head `steps` optimizer steps on; heads whose gate reaches 1 stop fading. Returns the rest."""
    fades = growing_heads(model)
    if not fades:
        return fades
    heads = model_heads(model)
    scales: dict[int, dict[int, float]] = {}
    for fade in fades:
        fade.step += steps
        if fade.head in heads.present(fade.layer) and fade.head not in heads.masked(fade.layer):
            scales.setdefault(fade.layer, {})[fade.head] = fade.gate
    fades[:] = [f for f in fades if f.gate < 1.0 and f.head in scales.get(f.layer, {})]
    if scales:
        set_gate_scales(model, scales)
    return fades


def _check_kv_groups(heads: ModelHeads, added: HeadPlan) -> None:
    """Grouped-query attention: a removed K/V group comes back whole (its query heads all together)."""
    size = heads.kv_group_size
    if size == 1:
        return
    problems = []
    for layer, targets in added.items():
        for kv in sorted({h // size for h in targets}):
            group = list(range(kv * size, (kv + 1) * size))
            if not set(group) <= set(targets):
                problems.append(f"layer {layer}: heads {group} share K/V head {kv}")
    if problems:
        raise InvalidPruningPlan("Grouped-query attention: removed query heads that share a K/V head can only "
                                 "grow back together (" + "; ".join(problems) + ").")


def _insert(heads: ModelHeads, layer: int, new_heads: list[int]) -> None:
    """Add zeroed weight slices for `new_heads` (removed, original indices) and update `sentinel_present`."""
    attn = heads.modules[layer]
    target = heads.adapter.emptied_module(attn)
    if hasattr(target, "sentinel_empty"):   # the layer had lost every head: give it its real forward back
        target.__class__ = target.__class__.__bases__[0]
        del target.sentinel_empty
    old_present, old_kv = list(heads.present(layer)), heads.present_kv(layer)
    present = sorted(old_present + new_heads)
    kv_present = sorted({h // heads.kv_group_size for h in present})
    with torch.no_grad():
        heads.adapter.insert_heads(
            attn, [present.index(h) for h in old_present], [kv_present.index(kv) for kv in old_kv],
            len(present), len(kv_present),
        )
    attn.sentinel_present = present


def _initialise(heads: ModelHeads, layer: int, new_heads: list[int], std: float, generator: torch.Generator) -> None:
    """Fresh N(0, std) Q/O (and K/V unless another present head shares them) for `new_heads`; biases to 0."""
    size = heads.kv_group_size
    shared_kv = {h // size for h in heads.present(layer) if h not in new_heads}   # masked heads keep their K/V too
    with torch.no_grad():
        for head in new_heads:
            views = heads.head_weights(layer, head)
            parts = [views.q, views.o] + ([] if head // size in shared_kv else [views.k, views.v])
            for view in parts:
                view.copy_(torch.randn(view.shape, generator=generator) * std)
            biases = [views.q_bias] + ([] if head // size in shared_kv else [views.k_bias, views.v_bias])
            for bias in biases:
                if bias is not None:
                    bias.zero_()
