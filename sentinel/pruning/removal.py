"""Physical head removal: the heads' Q/K/V/O slices leave the weights, so the model gets smaller and faster.

Heads keep their original names: a layer's `sentinel_present` list maps its remaining weight
slices back to original head indices across any number of removals. A layer that loses every head
keeps a stand-in forward that returns its output projection's bias, and still advances the KV cache.
"""

from __future__ import annotations

import logging
from functools import cache

import torch
from torch import nn

from sentinel.errors import InvalidPruningPlan
from sentinel.models.adapters import FamilyAdapter
from sentinel.models.heads import ModelHeads, model_heads
from sentinel.pruning.masks import _record, refresh_gates
from sentinel.pruning.plan import HeadPlan, PlanLike, normalize_plan

logger = logging.getLogger(__name__)


def check_kv_groups(heads: ModelHeads, plan: HeadPlan) -> None:
    """Refuse a removal that would split a grouped-query K/V group (it can only go as a whole)."""
    size = heads.kv_group_size
    if size == 1:
        return
    problems = []
    for layer, targets in plan.items():
        present = set(heads.present(layer))
        gone = present & set(targets)
        for kv in sorted({h // size for h in gone}):
            group = [h for h in range(kv * size, (kv + 1) * size) if h in present]
            if not set(group) <= gone:
                problems.append(f"layer {layer}: heads {group} share K/V head {kv}")
    if problems:
        raise InvalidPruningPlan(
            "Grouped-query attention: query heads that share a K/V head can only be removed together ("
            + "; ".join(problems) + "). Remove the whole group, or mask the heads instead."
        )


def remove_heads(model: nn.Module, plan: PlanLike, note: dict | None = None) -> HeadPlan:
    """Remove heads from the weights (original indices); returns the heads actually removed.

    Already-removed heads are skipped with a warning. `note` (e.g. the strategy that chose them) is
    kept in the pruning history that `save_model` writes.
    """
    heads = model_heads(model)
    wanted = normalize_plan(plan, heads.num_layers, heads.num_heads)
    todo: HeadPlan = {}
    for layer, targets in wanted.items():
        present = heads.present(layer)
        for head in targets:
            if head in present:
                todo.setdefault(layer, []).append(head)
            else:
                logger.warning("Layer %d head %d was already removed; nothing to do.", layer, head)
    check_kv_groups(heads, todo)
    for layer, targets in todo.items():
        _remove_from_layer(heads, layer, targets)
    _record(model, "remove", todo, note)
    return todo


def keep_only(model: nn.Module, kept: dict[int, list[int]]) -> None:
    """Remove every present head not listed in `kept` (used to rebuild saved pruned shapes)."""
    heads = model_heads(model)
    plan = {
        layer: [h for h in heads.present(layer) if h not in kept.get(layer, [])]
        for layer in range(heads.num_layers)
    }
    remove_heads(model, {layer: hs for layer, hs in plan.items() if hs})


def _remove_from_layer(heads: ModelHeads, layer: int, targets: list[int]) -> None:
    attn = heads.modules[layer]
    present, masked = heads.present(layer), heads.masked(layer)
    kv_present = heads.present_kv(layer)
    keep = [h for h in present if h not in targets]
    keep_local = [present.index(h) for h in keep]
    kv_keep = sorted({h // heads.kv_group_size for h in keep})
    kv_local = [kv_present.index(kv) for kv in kv_keep]
    with torch.no_grad():
        heads.adapter.keep_heads(attn, keep_local, kv_local)
    attn.sentinel_present = keep
    attn.sentinel_masked = [h for h in masked if h in keep]
    refresh_gates(heads, [layer])
    if not keep:
        _make_empty(heads.adapter, attn, heads.head_dim)


def _make_empty(adapter: FamilyAdapter, attn: nn.Module, head_dim: int) -> None:
    """Give a layer with no heads left a forward that yields only its output bias."""
    target = adapter.emptied_module(attn)
    target.__class__ = _empty_class(type(target))
    target.sentinel_empty = (adapter, head_dim)


@cache
def _empty_class(base: type) -> type:
    def forward(self, *args, **kwargs):
        adapter, head_dim = self.sentinel_empty
        hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        cache_obj = kwargs.get(adapter.cache_kwarg)
        if cache_obj is not None:
            cache_obj = getattr(cache_obj, "self_attention_cache", cache_obj)
            # Advance the cache with zero heads so its sequence length stays right for every layer.
            empty = hidden_states.new_zeros(hidden_states.shape[0], 0, hidden_states.shape[1], head_dim)
            cache_obj.update(empty, empty.clone(), self.layer_idx)
        return adapter.empty_output(self, hidden_states), None

    return type(f"Headless{base.__name__}", (base,), {"forward": forward})
