"""How the pruning state reaches a forward pass: gate buffers with their hooks, and the headless attention.

`sentinel.models.state` decides which unit is gated to what and which attention has no heads left; this module
only does it to the modules, knowing nothing of the state:
- a unit gate (UNIT_GATE) is a non-persistent buffer multiplied into the input of a projection, whose last axis
  ([..., units * width]) holds each unit separately, so 0 removes a unit's contribution exactly;
- a part gate (PART_GATE) is a scalar multiplied into the output of a part's output module (post-LN families
  blend with the residual instead: `residual_arg` names the forward argument holding it);
- a gate set to None is no gate at all (the hook passes the computation through unchanged);
- an attention module with no heads left gets a subclass whose forward yields only its output bias.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import nn

from sentinel.models.adapters import FamilyAdapter

UNIT_GATE = "sentinel_gate"
PART_GATE = "sentinel_part_gate"


# --- gates --------------------------------------------------------------------------------------

def _unit_gate_hook(module: nn.Module, args: tuple) -> tuple | None:
    gate = module._buffers.get(UNIT_GATE)
    if gate is None:
        return None
    hidden = args[0]                                      # [..., units * width]
    per_unit = hidden.unflatten(-1, (gate.shape[0], -1))  # [..., units, width]
    return ((per_unit * gate.to(hidden.dtype)[:, None]).flatten(-2), *args[1:])


def _part_gate_hook(residual_arg: int | None):
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        gate = module._buffers.get(PART_GATE)
        if gate is None:
            return None
        first = output[0] if isinstance(output, tuple) else output
        g = gate.to(first.dtype)
        gated = first * g if residual_arg is None else first * g + args[residual_arg] * (1 - g)
        return (gated, *output[1:]) if isinstance(output, tuple) else gated
    return hook


def install_gate(module: nn.Module, name: str, gate: torch.Tensor | None, residual_arg: int | None = None) -> None:
    """Set a gate buffer (None = no gating), registering its hook once per module."""
    if name not in module._buffers:
        module.register_buffer(name, None, persistent=False)
        if name == UNIT_GATE:
            module.register_forward_pre_hook(_unit_gate_hook)
        else:
            module.register_forward_hook(_part_gate_hook(residual_arg))
    module._buffers[name] = gate


def clear_gate(module: nn.Module, name: str) -> None:
    """Drop a gate (the module computes as if it never had one); nothing when the module has none."""
    if name in module._buffers:
        module._buffers[name] = None


# --- a layer that lost every head ----------------------------------------------------------------

def make_headless(adapter: FamilyAdapter, attn: nn.Module, head_dim: int) -> None:
    """Give an attention module with no heads left a forward that yields only its output bias."""
    target = adapter.emptied_module(attn)
    if not hasattr(target, "sentinel_empty"):
        target.__class__ = _headless_class(type(target))
    target.sentinel_empty = (adapter, head_dim)


def restore_headed(adapter: FamilyAdapter, attn: nn.Module) -> None:
    """Give an emptied attention module its own class back (heads are growing into it again)."""
    target = adapter.emptied_module(attn)
    if hasattr(target, "sentinel_empty"):
        target.__class__ = target.__class__.__bases__[0]
        del target.sentinel_empty


@cache
def _headless_class(base: type) -> type:
    def forward(self, *args, **kwargs):
        adapter, head_dim = self.sentinel_empty
        hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        cache_obj = kwargs.get(adapter.cache_kwarg, kwargs.get("cache"))
        if cache_obj is not None:
            cache_obj = getattr(cache_obj, "self_attention_cache", cache_obj)
            # Advance the cache with zero heads so its sequence length stays right for every layer.
            empty = hidden_states.new_zeros(hidden_states.shape[0], 0, hidden_states.shape[1], head_dim)
            cache_obj.update(empty, empty.clone(), self.layer_idx)
        return adapter.empty_output(self, hidden_states), None

    return type(f"Headless{base.__name__}", (base,), {"forward": forward})
