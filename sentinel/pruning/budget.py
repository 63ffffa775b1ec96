"""Budgeted selection: choose heads, neurons and/or blocks to remove a target share of the body's cost.

Targets (`Target.parse`):
- `params=0.5`: half of the PRUNABLE parameters — the weights and biases of the attention and MLP
  projections of the transformer body (embeddings, norms and the LM head are not prunable);
- `flops=0.5`: half of the body's forward FLOPs per token at `seq_len` (`sentinel.models.flops.forward_flops`
  with `lm_head=False`: 2 x weights of every projection, plus 4 x head_dim x seq_len per query head for scores
  and weighted values, the full-context bound);
- `speedup=1.5`: a speed-up PREDICTED FROM THE BODY'S FLOPS, i.e. the FLOPs share 1 - 1/1.5 = 1/3; the
  measured speed-up is another matter (embeddings, the LM head, memory traffic and kernel overheads do not
  shrink with the body), so callers show it beside a timed one;
- `heads=0.3,neurons=0.5`: a ratio of the active units of each kind.

Allocation `global` ranks every candidate of every kind together; each kind's scores become rank
fractions in [0, 1] first (`rank_fraction`), so heads and neurons compete on the same scale whatever
the metric's units. `uniform` removes the same number of units of a kind from every layer, stepping
up the kind whose removed share is lowest. Every layer keeps `min_heads` / `min_neurons` active units.
Units come in whole sizes, so a target is met as closely as one unit allows: the result says how
close and why. Grouped-query models removing heads (`whole_kv_groups`) rank whole K/V groups.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from sentinel.errors import InvalidPruningPlan
from sentinel.metrics.hybrid import rank_fraction
from sentinel.metrics.scores import UnitScores, active_grid
from sentinel.models.flops import block_flops, block_projections, forward_flops
from sentinel.models.state import ModelState, model_state
from sentinel.pruning.plan import PruningPlan
from sentinel.pruning.strategies.base import heads_for_ratio

logger = logging.getLogger(__name__)

KIND_NAMES = {"heads": "head", "neurons": "neuron", "layers": "layer"}
ALLOCATIONS = ("global", "uniform")
SHARE_KEYS = ("params", "flops", "speedup")      # targets on the whole body (one at a time)
LOWER_IS_IMPORTANT = frozenset({"entropy", "entropy_normalized"})   # diffuse heads go first


@dataclass(frozen=True)
class Target:
    """What to remove: a share of prunable parameters, a share of body FLOPs, a speed-up predicted from the body's
    FLOPs, or a ratio of each kind's active units."""

    params: float | None = None
    flops: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)     # {"head": 0.3, "neuron": 0.5}
    speedup: float | None = None                               # 1.5: the body's FLOPs divided by 1.5

    @classmethod
    def parse(cls, text: str) -> Target:
        """'params=0.5', 'flops=0.4', 'speedup=1.5' or 'heads=0.3,neurons=0.5'."""
        values: dict[str, float] = {}
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in (*SHARE_KEYS, *KIND_NAMES):
                raise InvalidPruningPlan(f"Cannot read target {item!r}: write params=0.5, flops=0.5, speedup=1.5 "
                                         "or heads=0.3,neurons=0.5.")
            try:
                number = float(value)
            except ValueError:
                raise InvalidPruningPlan(f"Target {key}={value!r} is not a number.") from None
            if key == "speedup":
                if not 1.0 <= number < math.inf:
                    raise InvalidPruningPlan(f"Target speedup={number} must be 1 or more (1.5 = 1.5x faster, "
                                             "predicted from the body's FLOPs).")
            elif not 0.0 <= number < 1.0:
                raise InvalidPruningPlan(f"Target {key}={number} must be in [0, 1).")
            values[key] = number
        shares = [k for k in values if k in SHARE_KEYS]
        if not values or len(shares) > 1 or (shares and len(values) > 1):
            raise InvalidPruningPlan("Give one target: params=S, flops=S, speedup=X, or per-kind ratios like "
                                     "heads=0.3,neurons=0.5.")
        ratios = {KIND_NAMES[k]: v for k, v in values.items() if k in KIND_NAMES}
        return cls(values.get("params"), values.get("flops"), ratios, values.get("speedup"))

    @property
    def flops_share(self) -> float | None:
        """The share of the body's FLOPs to remove: `flops`, or 1 - 1/speedup for a speed-up (None otherwise)."""
        if self.speedup is not None:
            return 1.0 - 1.0 / self.speedup
        return self.flops

    def describe(self) -> str:
        if self.params is not None:
            return f"params={self.params}"
        if self.flops is not None:
            return f"flops={self.flops}"
        if self.speedup is not None:
            return f"speedup={self.speedup}"
        return ",".join(f"{k}s={v}" for k, v in self.ratios.items())


@dataclass
class _Candidate:
    kind: str
    layer: int
    units: list[int]            # original units it switches off (a K/V group: its active heads)
    plan_units: list[int]       # units the plan names (a K/V group: every present head of it)
    score: float                # normalised importance, lower goes first
    params: int                 # prunable parameters it removes
    flops: int
    extra_params: int = 0       # other parameters that leave with it (a block's norms)


@dataclass
class BudgetResult:
    """The chosen plan and what it is predicted to remove (body = the attention and MLP projections)."""

    plan: PruningPlan
    target: str
    allocation: str
    metrics: dict[str, str]
    counts: dict[str, int]
    prunable_params_before: int
    prunable_params_after: int
    total_params_before: int
    total_params_after: int
    flops_before: int
    flops_after: int
    seq_len: int
    exact: bool
    reason: str = ""

    @property
    def prunable_share_removed(self) -> float:
        return 1.0 - self.prunable_params_after / self.prunable_params_before

    @property
    def total_share_removed(self) -> float:
        return 1.0 - self.total_params_after / self.total_params_before

    @property
    def flops_share_removed(self) -> float:
        return 1.0 - self.flops_after / self.flops_before

    @property
    def speedup_predicted(self) -> float:
        """The speed-up the body's FLOPs predict (before / after); a prediction, not a timing."""
        return self.flops_before / self.flops_after

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plan"] = self.plan.to_dict()
        data.update(prunable_share_removed=self.prunable_share_removed, total_share_removed=self.total_share_removed,
                    flops_share_removed=self.flops_share_removed, speedup_predicted=self.speedup_predicted)
        return data


# --- costs -----------------------------------------------------------------------------------------

def _numel(tensors: Iterable[torch.Tensor | None]) -> int:
    return sum(t.numel() for t in tensors if t is not None)


def prunable_params(model: nn.Module) -> int:
    """Weights and biases of the body's attention and MLP projections, as the model is now (masked units count)."""
    state = model_state(model)
    return sum(_numel(p for p in (m.weight, m.bias) if isinstance(p, nn.Parameter))
               for layer in state.present_blocks() for m in block_projections(state, layer))


def _head_cost(state: ModelState, layer: int, head: int, seq_len: int, kv_share: float) -> tuple[float, float]:
    v = state.views(layer, "head", head)
    own = _numel([v["q"], v["o"], v.get("q_bias")])
    shared = _numel([v["k"], v["v"], v.get("k_bias"), v.get("v_bias")])
    weights = v["q"].numel() + v["o"].numel() + kv_share * (v["k"].numel() + v["v"].numel())
    return own + kv_share * shared, 2 * weights + 4 * state.head_dim * seq_len


def _neuron_cost(state: ModelState, layer: int, neuron: int) -> tuple[int, int]:
    v = state.views(layer, "neuron", neuron)
    weights = _numel(t for r, t in v.items() if not r.endswith("_bias"))
    return _numel(v.values()), 2 * weights


# --- candidates --------------------------------------------------------------------------------------

def _importance(scores: UnitScores) -> torch.Tensor:
    values = scores.values
    return -values if scores.metric in LOWER_IS_IMPORTANT else values


def _candidates(state: ModelState, model: nn.Module, kind: str, scores: UnitScores, seq_len: int,
                whole_kv_groups: bool) -> list[_Candidate]:
    active = active_grid(model, kind)
    if tuple(scores.values.shape) != tuple(active.shape):
        raise InvalidPruningPlan(f"{kind} scores are shaped {tuple(scores.values.shape)} but the model has "
                                 f"{tuple(active.shape)}; compute them on this model.")
    importance = _importance(scores).masked_fill(~active, math.nan)
    if bool((active & torch.isnan(importance)).any()):
        layer, unit = (active & torch.isnan(importance)).nonzero()[0].tolist()
        raise InvalidPruningPlan(f"Active {kind} {layer}:{unit} has no {scores.metric} score (NaN); recompute the "
                                 "scores on this model.")
    rank = rank_fraction(importance)
    found: list[_Candidate] = []
    if kind == "layer":
        for layer in state.present_blocks():
            if not active[layer, 0]:
                continue
            params = _numel(p for m in block_projections(state, layer) for p in (m.weight, m.bias)
                            if isinstance(p, nn.Parameter))
            flops = block_flops(state, layer, seq_len)
            every = sum(p.numel() for p in state.block(layer).parameters())
            found.append(_Candidate("layer", layer, [layer], [layer], float(rank[layer, 0]), params, flops,
                                    every - params))
        return found
    size = state.kv_group_size if kind == "head" and whole_kv_groups else 1
    for layer in state.present_blocks():
        live = state.active(layer, kind)
        if kind == "neuron":
            if live:                                  # every neuron of a layer has the same shape: cost it once
                params, flops = _neuron_cost(state, layer, live[0])
                found += [_Candidate(kind, layer, [n], [n], float(rank[layer, n]), params, flops) for n in live]
            continue
        present = state.present(layer)
        for start in range(0, state.num_heads, size):
            group = [h for h in range(start, start + size)]
            heads = [h for h in group if h in live]
            if not heads:
                continue
            share = 1.0 if size > 1 else 1.0 / state.kv_group_size
            costs = [_head_cost(state, layer, h, seq_len, share) for h in heads]
            if size > 1:   # the group's K/V go with it: count them once
                v = state.views(layer, "head", heads[0])
                kv = _numel([v["k"], v["v"], v.get("k_bias"), v.get("v_bias")])
                params = sum(c[0] for c in costs) - (len(heads) - 1) * kv
                flops = sum(c[1] for c in costs) - (len(heads) - 1) * 2 * (v["k"].numel() + v["v"].numel())
            else:
                params, flops = costs[0]
            found.append(_Candidate(kind, layer, heads, [h for h in group if h in present],
                                    float(rank[layer, heads].mean()), round(params), round(flops)))
    return found


# --- selection -----------------------------------------------------------------------------------------

def select_budget(model: nn.Module, scores: Mapping[str, UnitScores], target: Target | str,
                  allocation: str = "global", min_heads: int = 1, min_neurons: int = 1,
                  whole_kv_groups: bool = False, seq_len: int = 256) -> BudgetResult:
    """Choose units of the kinds in `scores` ({"head": UnitScores, "neuron": ..., "layer": ...}) to meet `target`.

    Higher scores mean more important (entropy excepted: diffuse heads go first); see the module doc.
    """
    target = Target.parse(target) if isinstance(target, str) else target
    if allocation not in ALLOCATIONS:
        raise InvalidPruningPlan(f"Unknown allocation {allocation!r}; use one of {', '.join(ALLOCATIONS)}.")
    if not scores:
        raise InvalidPruningPlan("No unit kinds to choose from: give scores for heads, neurons and/or layers.")
    if allocation == "uniform" and "layer" in scores:
        raise InvalidPruningPlan("Uniform allocation removes the same count from every layer; whole blocks can only "
                                 "be allocated globally (--allocation global).")
    missing = [k for k in target.ratios if k not in scores]
    if missing:
        raise InvalidPruningPlan(f"The target names {', '.join(k + 's' for k in missing)} but no scores for them; "
                                 "add them to --units.")
    if min_heads < 0 or min_neurons < 0:
        raise InvalidPruningPlan("min_heads and min_neurons must be 0 or more.")
    state = model_state(model)
    pools = {kind: _candidates(state, model, kind, s, seq_len, whole_kv_groups) for kind, s in scores.items()}
    room = {("head", layer): len(state.active(layer)) - min_heads for layer in range(state.num_layers)}
    room.update({("neuron", layer): len(state.active(layer, "neuron")) - min_neurons
                 for layer in range(state.num_layers)})
    prunable = prunable_params(model)
    flops = forward_flops(model, seq_len, lm_head=False)
    if target.ratios:
        chosen = _by_ratio(pools, target.ratios, allocation, room)
        exact, reason = True, ""
    else:
        measure = "params" if target.params is not None else "flops"      # a speed-up is a FLOPs share
        goal = (target.params if measure == "params" else target.flops_share) * (
            prunable if measure == "params" else flops)
        chosen = (_global if allocation == "global" else _uniform)(pools, measure, goal, room, state.num_layers)
        got = sum(getattr(c, measure) for c in chosen)
        exact = got == round(goal)
        smallest = min((getattr(c, measure) for pool in pools.values() for c in pool), default=0)
        short = goal - got > smallest     # a unit would have fitted: the minimums (or the pools) ran out
        reason = "" if exact else (
            f"units come in whole sizes: the closest feasible choice removes {got:,} of the {round(goal):,} "
            f"{measure} asked for" + (" (limited by min_heads / min_neurons or the units available)" if short else ""))
    return _result(model, state, scores, target, allocation, chosen, prunable, flops, seq_len, exact, reason)


def _allowed(c: _Candidate, room: dict[tuple[str, int], int], blocks: set[int]) -> bool:
    if c.kind == "layer":
        return c.layer not in blocks
    return c.layer not in blocks and room[(c.kind, c.layer)] >= len(c.units)


def _take(c: _Candidate, room: dict[tuple[str, int], int], blocks: set[int]) -> None:
    if c.kind == "layer":
        blocks.add(c.layer)
    else:
        room[(c.kind, c.layer)] -= len(c.units)


def _global(pools: dict[str, list[_Candidate]], measure: str, goal: float, room: dict, num_layers: int
            ) -> list[_Candidate]:
    order = sorted((c for pool in pools.values() for c in pool),
                   key=lambda c: (c.score, ("layer", "head", "neuron").index(c.kind), c.layer, c.units[0]))
    chosen: list[_Candidate] = []
    blocks: set[int] = set()
    got = 0.0
    overshoot: _Candidate | None = None               # the cheapest unit that would pass the goal
    for c in order:
        if got >= goal:
            break
        if not _allowed(c, room, blocks):
            continue
        cost = getattr(c, measure)
        if got + cost > goal:                         # keep looking for smaller units that still fit
            if overshoot is None or cost < getattr(overshoot, measure):
                overshoot = c
            continue
        _take(c, room, blocks)
        chosen.append(c)
        got += cost
    if overshoot is not None and got < goal and _allowed(overshoot, room, blocks) and \
            got + getattr(overshoot, measure) - goal < goal - got:
        _take(overshoot, room, blocks)
        chosen.append(overshoot)
    # units inside a chosen block go with the block
    return [c for c in chosen if c.kind == "layer" or c.layer not in blocks]


def _uniform(pools: dict[str, list[_Candidate]], measure: str, goal: float, room: dict, num_layers: int
             ) -> list[_Candidate]:
    per_layer = {kind: {layer: sorted((c for c in pool if c.layer == layer), key=lambda c: (c.score, c.units[0]))
                        for layer in range(num_layers)} for kind, pool in pools.items()}
    totals = {kind: sum(getattr(c, measure) for c in pool) or 1 for kind, pool in pools.items()}
    taken = {kind: 0 for kind in pools}
    removed = {kind: 0.0 for kind in pools}
    chosen: list[_Candidate] = []
    got = 0.0
    exhausted: set[str] = set()
    while got < goal and len(exhausted) < len(pools):
        kind = min((k for k in pools if k not in exhausted), key=lambda k: (removed[k] / totals[k], k != "head"))
        step = []
        for layer, ordered in per_layer[kind].items():
            if taken[kind] < len(ordered):
                c = ordered[taken[kind]]
                if room[(kind, layer)] >= len(c.units):
                    step.append(c)
        if not step or len(step) < sum(1 for o in per_layer[kind].values() if o):
            exhausted.add(kind)                       # some layer cannot give one more: the kind stops here
            continue
        cost = sum(getattr(c, measure) for c in step)
        if got + cost > goal and (got + cost - goal) > (goal - got):
            exhausted.add(kind)
            continue
        for c in step:
            room[(kind, c.layer)] -= len(c.units)
        chosen += step
        taken[kind] += 1
        removed[kind] += cost
        got += cost
    return chosen


def _by_ratio(pools: dict[str, list[_Candidate]], ratios: dict[str, float], allocation: str, room: dict
              ) -> list[_Candidate]:
    chosen: list[_Candidate] = []
    for kind, ratio in ratios.items():
        pool = pools[kind]
        if allocation == "global":
            count = heads_for_ratio(ratio, len(pool))
            picked = []
            blocks: set[int] = set()
            for c in sorted(pool, key=lambda c: (c.score, c.layer, c.units[0])):
                if len(picked) == count:
                    break
                if _allowed(c, room, blocks):
                    _take(c, room, blocks)
                    picked.append(c)
            if len(picked) < count:
                raise InvalidPruningPlan(f"{kind}s={ratio} asks for {count} of {len(pool)}, but the per-layer "
                                         f"minimum allows only {len(picked)}. Lower the ratio or the minimum.")
            chosen += picked
            continue
        for layer in sorted({c.layer for c in pool}):
            mine = sorted((c for c in pool if c.layer == layer), key=lambda c: (c.score, c.units[0]))
            count = heads_for_ratio(ratio, len(mine))
            if count > 0 and room[(kind, layer)] < sum(len(c.units) for c in mine[:count]):
                raise InvalidPruningPlan(f"{kind}s={ratio} asks for {count} in layer {layer}, more than its minimum "
                                         "allows. Lower the ratio or the minimum.")
            chosen += mine[:count]
    return chosen


def _result(model: nn.Module, state: ModelState, scores: Mapping[str, UnitScores], target: Target, allocation: str,
            chosen: list[_Candidate], prunable: int, flops: int, seq_len: int, exact: bool, reason: str
            ) -> BudgetResult:
    heads: dict[int, list[int]] = {}
    neurons: dict[int, list[int]] = {}
    layers: dict[int, list[str]] = {}
    for c in chosen:
        if c.kind == "layer":
            layers[c.layer] = ["block"]
        else:
            bucket = heads if c.kind == "head" else neurons
            bucket.setdefault(c.layer, []).extend(c.plan_units)
    plan = PruningPlan({k: sorted(v) for k, v in sorted(heads.items())},
                       {k: sorted(v) for k, v in sorted(neurons.items())}, dict(sorted(layers.items())))
    removed_params = sum(c.params for c in chosen)
    removed_total = removed_params + sum(c.extra_params for c in chosen)
    removed_flops = sum(c.flops for c in chosen)
    total = sum(p.numel() for p in model.parameters())
    counts = {"heads": sum(len(c.units) for c in chosen if c.kind == "head"),
              "neurons": sum(len(c.units) for c in chosen if c.kind == "neuron"),
              "layers": sum(1 for c in chosen if c.kind == "layer")}
    logger.info("Budget %s (%s): %s; %.1f%% of prunable parameters", target.describe(), allocation, counts,
                100 * removed_params / prunable)
    return BudgetResult(plan, target.describe(), allocation, {k: s.metric for k, s in scores.items()}, counts,
                        prunable, prunable - removed_params, total, total - removed_total, flops,
                        flops - removed_flops, seq_len, exact, reason)
