"""The one owner of a model's pruning state: which original units are present, masked or fading, and the history.

For every original layer and every unit kind — `head` (query heads; K/V heads follow their groups),
`neuron` (MLP intermediate channels) and `part` (0 = the attention part, 1 = the MLP part of a
block) — a `UnitSet` says which original units are physically in the weights (`present`), which of
those are gated off (`masked`) and which carry a fractional gate while fading in (`scales`). A
layer's whole block may be gone (`block` False). Units are always named by original index.

The state lives in one attribute on the model's ModuleList of blocks (so `copy.deepcopy` and any
wrapper of the same blocks see the same state). Only this module decides gates (`sentinel.models.gates`
puts them on the modules):
- unit gates: a non-persistent buffer multiplied into the input of the unit kind's gate projection
  ([..., units * width] holds each unit separately), so 0 removes a unit's contribution exactly;
- part gates: a scalar multiplied into the output of a part's output module (post-LN families blend
  with the residual instead), so 0 makes the residual pass through the part.
With nothing masked or fading a gate is dropped altogether, so unmasking restores the computation
bit for bit. `ModelState` binds a model to its adapter and state; every layout a caller gets is
derived from it on demand, never cached.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.errors import CorruptModelError, InvalidPruningPlan
from sentinel.models.adapters import find_blocks
from sentinel.models.adapters.base import (
    PART_NAMES, FamilySpec, insert_units, keep_units, submodule, unit_views,
)
from sentinel.models.gates import (
    PART_GATE, UNIT_GATE, clear_gate, install_gate, make_headless, restore_headed,
)
from sentinel.models.layout import HeadLayout, HeadWeights

logger = logging.getLogger(__name__)

KINDS = ("head", "neuron", "part")
_STATE = "sentinel_state"

UnitPlan = dict[int, list[int]]


@dataclass
class UnitSet:
    """One layer's units of one kind, in original indices."""

    total: int
    present: list[int]
    masked: list[int] = field(default_factory=list)
    scales: dict[int, float] = field(default_factory=dict)

    def active(self) -> list[int]:
        return [u for u in self.present if u not in self.masked]


@dataclass
class LayerState:
    block: bool
    units: dict[str, UnitSet]


@dataclass
class PruningState:
    """All of a model's pruning state: per layer and kind, plus the history of steps and the fading units."""

    layers: list[LayerState]
    history: list[dict] = field(default_factory=list)
    growing: list[Any] = field(default_factory=list)
    # Matrices whose zeros are a weight-level sparsity mask, held through training (sentinel.sparsity.record):
    # {"<original layer>.<path in block>" or a module path outside the body: {"pattern", "method", ...}}
    weights: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def fresh(cls, num_layers: int, totals: dict[str, int]) -> PruningState:
        return cls([LayerState(True, {k: UnitSet(n, list(range(n))) for k, n in totals.items()})
                    for _ in range(num_layers)])


# --- the binding of a model to its adapter and state ----------------------------------------------

class ModelState:
    """A model seen through its adapter and its pruning state, layer by layer, in original indices."""

    def __init__(self, model: nn.Module) -> None:
        adapter, blocks = find_blocks(model)
        config = model.config
        self.model = model
        self.adapter = adapter
        self.blocks = blocks
        self.spec: FamilySpec = adapter.spec(config)
        self.num_heads, self.num_kv_heads, self.head_dim, self.hidden_size = adapter.head_config(config)
        self.num_neurons = adapter.mlp_size(config)
        state = blocks.__dict__.get(_STATE)
        if state is None:
            state = PruningState.fresh(len(blocks), {"head": self.num_heads, "neuron": self.num_neurons,
                                                     "part": len(PART_NAMES)})
            blocks.__dict__[_STATE] = state
        self.state: PruningState = state

    # --- shape ---------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.state.layers)

    @property
    def kv_group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def block_present(self, layer: int) -> bool:
        return self.state.layers[layer].block

    def present_blocks(self) -> list[int]:
        return [layer for layer, s in enumerate(self.state.layers) if s.block]

    def block(self, layer: int) -> nn.Module | None:
        """The block module of original layer `layer`, None when the block was removed."""
        if not self.state.layers[layer].block:
            return None
        return self.blocks[sum(1 for s in self.state.layers[:layer] if s.block)]

    @property
    def modules(self) -> list[nn.Module | None]:
        """Attention modules in original layer order (None where the block was removed)."""
        return [None if b is None else b.get_submodule(self.adapter.attention_path)
                for b in (self.block(layer) for layer in range(self.num_layers))]

    def unit_root(self, layer: int, kind: str) -> nn.Module:
        block = self.block(layer)
        if block is None:
            raise InvalidPruningPlan(f"Layer {layer}'s block was removed; it has no {kind}s.")
        return submodule(block, self.spec.units[kind].root)

    def units(self, layer: int, kind: str = "head") -> UnitSet:
        return self.state.layers[layer].units[kind]

    def present(self, layer: int, kind: str = "head") -> list[int]:
        return list(self.units(layer, kind).present)

    def masked(self, layer: int, kind: str = "head") -> list[int]:
        return list(self.units(layer, kind).masked)

    def active(self, layer: int, kind: str = "head") -> list[int]:
        return self.units(layer, kind).active()

    def total(self, kind: str) -> int:
        return {"head": self.num_heads, "neuron": self.num_neurons, "part": len(PART_NAMES)}[kind]

    def present_kv(self, layer: int) -> list[int]:
        """Original key/value heads still present in a layer."""
        return sorted({h // self.kv_group_size for h in self.present(layer)})

    def counts(self, layer: int, kind: str) -> dict[str, int]:
        """Current number of units in each index space of `kind` (heads: query and K/V heads)."""
        if kind == "head":
            return {"head": len(self.present(layer)), "kv": len(self.present_kv(layer))}
        return {kind: len(self.present(layer, kind))}

    def has_removed_units(self) -> bool:
        """Whether any head, neuron, part or block has been cut out of the weights."""
        return any(not s.block or any(len(u.present) < u.total for u in s.units.values()) for s in self.state.layers)

    def has_masked_units(self) -> bool:
        return any(u.masked for s in self.state.layers for u in s.units.values())

    def unmask_all(self) -> None:
        """Lift every mask of every kind (history is the caller's business)."""
        for kind in KINDS:
            self.unmask(kind, None)

    def local_index(self, layer: int, head: int) -> int:
        return self.present(layer).index(head)

    def views(self, layer: int, kind: str, unit: int) -> dict[str, Any]:
        """Views of original unit `unit` of `layer` ({role: weights, role_bias: bias}); it must be present."""
        present = self.present(layer, kind)
        if unit not in present:
            raise InvalidPruningPlan(f"Layer {layer} {kind} {unit} is not in the weights (removed).")
        local = {kind: present.index(unit)}
        if kind == "head":
            local["kv"] = self.present_kv(layer).index(unit // self.kv_group_size)
        return unit_views(self.unit_root(layer, kind), self.spec.units[kind], local, self.counts(layer, kind))

    def head_weights(self, layer: int, head: int) -> HeadWeights:
        """Views of original head `head` of `layer`, all in (out, in) orientation; the head must be present."""
        v = self.views(layer, "head", head)
        return HeadWeights(q=v["q"], k=v["k"], v=v["v"], o=v["o"],
                           q_bias=v.get("q_bias"), k_bias=v.get("k_bias"), v_bias=v.get("v_bias"))

    def weight_module(self, key: str) -> nn.Module | None:
        """The module a weight-sparsity key names ("<original layer>.<path in block>" or a module path outside
        the body); None when its block was removed."""
        layer, _, path = key.partition(".")
        if layer.isdigit():
            block = self.block(int(layer))
            return None if block is None else block.get_submodule(path)
        return self.model.get_submodule(key)

    def layout(self) -> HeadLayout:
        config = self.model.config
        return HeadLayout(
            family=self.adapter.family,
            model_type=getattr(config, "model_type", "?"),
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_size=self.hidden_size,
            is_causal=self.adapter.is_causal(config),
            present=tuple(tuple(self.present(layer)) for layer in range(self.num_layers)),
            num_neurons=self.num_neurons,
            present_neurons=tuple(len(self.present(layer, "neuron")) for layer in range(self.num_layers)),
            present_blocks=tuple(self.present_blocks()),
        )

    # --- gates ---------------------------------------------------------------------------------

    def _gate_values(self, layer: int, kind: str) -> list[float]:
        s = self.units(layer, kind)
        return [0.0 if u in s.masked else s.scales.get(u, 1.0) for u in s.present]

    def refresh_gates(self, layers: list[int] | None = None) -> None:
        """Rebuild the unit and part gates of `layers` (default all) from the state."""
        for layer in range(self.num_layers) if layers is None else layers:
            block = self.block(layer)
            if block is None:
                continue
            for kind, spec in self.spec.units.items():
                proj = submodule(submodule(block, spec.root), spec.gate)
                values = self._gate_values(layer, kind)
                if all(v == 1.0 for v in values):
                    clear_gate(proj, UNIT_GATE)
                    continue
                install_gate(proj, UNIT_GATE, torch.tensor(values, dtype=proj.weight.dtype, device=proj.weight.device))
            parts = self.units(layer, "part")
            for index, part in enumerate(self.spec.parts):
                if index not in parts.present:
                    continue
                out = submodule(block, part.output)
                if index in parts.masked:
                    ref = next(out.parameters())
                    install_gate(out, PART_GATE, torch.zeros((), dtype=ref.dtype, device=ref.device), part.residual_arg)
                else:
                    clear_gate(out, PART_GATE)

    @contextmanager
    def gradient_gates(self, kind: str = "head") -> Iterator[dict[int, torch.Tensor]]:
        """Temporarily put a gate that requires grad on every layer with present units of `kind`.

        Yields {layer: gate[present units]} holding each unit's current gate value (1 active, 0 masked,
        its scale while fading in), so after `loss.backward()` `gate.grad[i]` is d loss / d gate of present
        unit i. For kind "part" the gate is [attention, mlp] of the present parts. Previous gates come back on exit.
        """
        gates: dict[int, torch.Tensor] = {}
        saved: list[tuple[nn.Module, str, torch.Tensor | None]] = []
        try:
            for layer in self.present_blocks():
                block = self.block(layer)
                if kind == "part":
                    parts = self.units(layer, "part")
                    if not parts.present:
                        continue
                    gate = torch.tensor([0.0 if i in parts.masked else 1.0 for i in parts.present],
                                        device=next(block.parameters()).device, requires_grad=True)
                    for slot, index in enumerate(parts.present):
                        spec = self.spec.parts[index]
                        out = submodule(block, spec.output)
                        saved.append((out, PART_GATE, out._buffers.get(PART_GATE)))
                        install_gate(out, PART_GATE, gate[slot], spec.residual_arg)
                    gates[layer] = gate
                    continue
                if not self.present(layer, kind):
                    continue
                spec = self.spec.units[kind]
                proj = submodule(submodule(block, spec.root), spec.gate)
                saved.append((proj, UNIT_GATE, proj._buffers.get(UNIT_GATE)))
                gate = torch.tensor(self._gate_values(layer, kind), dtype=torch.float32,
                                    device=proj.weight.device, requires_grad=True)
                install_gate(proj, UNIT_GATE, gate)
                gates[layer] = gate
            yield gates
        finally:
            for module, name, previous in reversed(saved):
                module._buffers[name] = previous

    # --- operations (plans already validated, original indices) ----------------------------------

    def mask(self, kind: str, plan: UnitPlan) -> UnitPlan:
        """Gate units off; returns the units newly masked (already masked or removed ones are skipped with a warning)."""
        newly: UnitPlan = {}
        for layer, targets in plan.items():
            s = self.units(layer, kind)
            self._note_absent(layer, kind, [u for u in targets if u not in s.present], "masking them does nothing")
            for unit in targets:
                if unit not in s.present:
                    continue
                if unit in s.masked:
                    logger.warning("Layer %d %s %s is already masked.", layer, kind, unit)
                else:
                    s.masked.append(unit)
                    newly.setdefault(layer, []).append(unit)
            s.masked.sort()
        self.refresh_gates(list(plan))
        return newly

    def unmask(self, kind: str, plan: UnitPlan | None) -> UnitPlan:
        """Gate masked units back on (all when `plan` is None); returns the units unmasked."""
        if plan is None:
            plan = {layer: self.masked(layer, kind) for layer in range(self.num_layers)}
        restored: UnitPlan = {}
        for layer, targets in plan.items():
            s = self.units(layer, kind)
            for unit in targets:
                if unit in s.masked:
                    s.masked.remove(unit)
                    restored.setdefault(layer, []).append(unit)
                elif unit not in s.present:
                    logger.warning("Layer %d %s %s was removed; unmasking cannot bring it back.", layer, kind, unit)
        self.refresh_gates(list(plan))
        return restored

    def set_scales(self, kind: str, scales: dict[int, dict[int, float]]) -> None:
        """Fractional gates {layer: {unit: value in (0, 1]}} on present, unmasked units (1 clears the scale)."""
        for layer, per_unit in scales.items():
            s = self.units(layer, kind)
            for unit, value in per_unit.items():
                if unit not in s.present or unit in s.masked:
                    raise InvalidPruningPlan(f"Layer {layer} {kind} {unit} is removed or masked; only active units "
                                             "take a gate scale. Unmask or grow it first.")
                if not 0.0 < float(value) <= 1.0:
                    raise InvalidPruningPlan(f"Gate scale {value} for layer {layer} {kind} {unit} is outside (0, 1].")
                if float(value) == 1.0:
                    s.scales.pop(unit, None)
                else:
                    s.scales[unit] = float(value)
        self.refresh_gates(list(scales))

    def scales(self, kind: str = "head") -> dict[int, dict[int, float]]:
        result: dict[int, dict[int, float]] = {}
        for layer in range(self.num_layers):
            s = self.units(layer, kind)
            live = {u: v for u, v in s.scales.items() if u in s.present and u not in s.masked}
            if live:
                result[layer] = live
        return result

    def check_even_groups(self, plan: UnitPlan) -> None:
        """Grouped-query removal must leave every remaining K/V group of a layer with the same number of
        query heads (whole groups may go); otherwise `repeat_kv` cannot pair them. Refuses naming a close even plan."""
        size = self.kv_group_size
        if size == 1:
            return
        problems, suggestions = [], []
        for layer, targets in plan.items():
            present = self.present(layer)
            keep = [h for h in present if h not in targets]
            groups = {kv: [h for h in present if h // size == kv] for kv in self.present_kv(layer)}
            left = {kv: [h for h in hs if h in keep] for kv, hs in groups.items()}
            sizes = {len(hs) for hs in left.values() if hs}
            if len(sizes) <= 1:
                continue
            for kv, hs in groups.items():
                gone = [h for h in hs if h in targets]
                if gone and left[kv]:
                    problems.append(f"layer {layer}: heads {hs} share K/V head {kv}")
            most = max(len(hs) - len(left[kv]) for kv, hs in groups.items())
            even = sorted(h for kv, hs in groups.items()
                          for h in ([h for h in hs if h in targets] + [h for h in hs if h not in targets])[:most])
            whole = sorted(h for kv, hs in groups.items() if any(h in targets for h in hs) for h in hs)
            suggestions.append(f"layer {layer}: the same number from every group {even}, or whole groups {whole}")
        if problems:
            raise InvalidPruningPlan(
                "Grouped-query attention: after removal every K/V group of a layer must keep the same number of "
                "query heads (" + "; ".join(problems) + "). Closest even plans: " + "; ".join(suggestions)
                + ". Or mask the heads instead."
            )

    def _note_absent(self, layer: int, kind: str, absent: list, consequence: str) -> None:
        """One log line for units a plan names that are no longer in the weights: a warning, unless their whole
        part (or block) was removed, which leaves nothing of them by design (e.g. replaying a saved plan)."""
        if not absent:
            return
        part = PART_NAMES.index("attention" if kind == "head" else "mlp") if kind in ("head", "neuron") else None
        part_gone = part is not None and part not in self.units(layer, "part").present
        log = logger.debug if part_gone or not self.block_present(layer) else logger.warning
        shown = ", ".join(map(str, absent[:8])) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
        log("Layer %d: %d %s(s) already removed (%s); %s.", layer, len(absent), kind, shown, consequence)

    def check_removable(self, plan: UnitPlan) -> None:
        """Refuse, before anything changes, head removal that the family's modules cannot make exact."""
        for layer, targets in plan.items():
            if not targets or len(targets) == len(self.present(layer)):
                continue    # a layer that loses every head drops its attention output as a whole: still exact
            reason = self.adapter.removal_refusal(self.unit_root(layer, "head"))
            if reason is not None:
                raise InvalidPruningPlan(f"Heads of layer {layer} cannot be removed exactly: {reason}. Mask them "
                                         "instead (masking is exact), or remove the whole attention part.")

    def remove(self, kind: str, plan: UnitPlan) -> UnitPlan:
        """Physically remove units (original indices); returns those removed (already-removed ones are skipped)."""
        todo: UnitPlan = {}
        for layer, targets in plan.items():
            present = self.present(layer, kind)
            self._note_absent(layer, kind, [u for u in targets if u not in present], "nothing to do")
            here = [u for u in targets if u in present]
            if here:
                todo[layer] = here
        if kind == "head":
            self.check_removable(todo)
            self.check_even_groups(todo)
        for layer, targets in todo.items():
            self._keep(layer, kind, [u for u in self.present(layer, kind) if u not in targets])
        return todo

    def _keep(self, layer: int, kind: str, keep: list[int]) -> None:
        s = self.units(layer, kind)
        spec = self.spec.units[kind]
        counts = self.counts(layer, kind)
        local = {kind: [s.present.index(u) for u in keep]}
        if kind == "head":
            kv_present, kv_keep = self.present_kv(layer), sorted({h // self.kv_group_size for h in keep})
            local["kv"] = [kv_present.index(kv) for kv in kv_keep]
        keep_units(self.unit_root(layer, kind), spec, local, counts)
        s.present = list(keep)
        s.masked = [u for u in s.masked if u in keep]
        s.scales = {u: v for u, v in s.scales.items() if u in keep}
        if kind == "head" and not keep:
            make_headless(self.adapter, self.unit_root(layer, "head"), self.head_dim)
        self.refresh_gates([layer])

    def insert(self, layer: int, kind: str, new: list[int]) -> None:
        """Add zeroed weight slices for removed units `new` (original indices); they join `present`."""
        s = self.units(layer, kind)
        part = 0 if kind == "head" else 1
        if part not in self.units(layer, "part").present:
            raise InvalidPruningPlan(f"Layer {layer}'s {PART_NAMES[part]} part was removed; its {kind}s cannot grow "
                                     "back.")
        root = self.unit_root(layer, kind)
        if kind == "head":
            restore_headed(self.adapter, root)
        old = list(s.present)
        present = sorted(old + list(new))
        kept_at = {kind: [present.index(u) for u in old]}
        sizes = {kind: len(present)}
        if kind == "head":
            old_kv = self.present_kv(layer)
            kv_present = sorted({h // self.kv_group_size for h in present})
            kept_at["kv"] = [kv_present.index(kv) for kv in old_kv]
            sizes["kv"] = len(kv_present)
        insert_units(root, self.spec.units[kind], kept_at, sizes)
        s.present = present
        self.refresh_gates([layer])

    # --- parts and blocks ------------------------------------------------------------------------

    def remove_parts(self, plan: dict[int, list[int]]) -> dict[int, list[int]]:
        """Remove attention (0) / MLP (1) parts: all their units and their output bias go, post-LN norms become
        identities, so the residual passes through exactly as when the part is masked."""
        done: dict[int, list[int]] = {}
        for layer, parts in plan.items():
            s = self.units(layer, "part")
            for index in parts:
                if index not in s.present:
                    logger.warning("Layer %d %s part was already removed; nothing to do.", layer, PART_NAMES[index])
                    continue
                spec = self.spec.parts[index]
                block = self.block(layer)
                self._keep(layer, spec.units, [])
                _drop_bias(submodule(block, spec.bias))
                if spec.norm is not None:
                    parent, _, name = spec.norm.rpartition(".")
                    setattr(submodule(block, parent), name, nn.Identity())
                out = submodule(block, spec.output)
                clear_gate(out, PART_GATE)
                s.present.remove(index)
                s.masked = [p for p in s.masked if p != index]
                done.setdefault(layer, []).append(index)
        return done

    def remove_blocks(self, layers: list[int]) -> list[int]:
        """Delete whole blocks from the ModuleList; the remaining blocks' `layer_idx` is renumbered so the
        KV cache stays consistent. At least one block must stay."""
        todo = [layer for layer in layers if self.block_present(layer)]
        for layer in layers:
            if layer not in todo:
                logger.warning("Layer %d's block was already removed; nothing to do.", layer)
        if len(todo) >= len(self.present_blocks()):
            raise InvalidPruningPlan("Removing these blocks would leave the model without any; keep at least one.")
        for layer in sorted(todo, reverse=True):
            del self.blocks[self.present_blocks().index(layer)]
            state = self.state.layers[layer]
            state.block = False
            for s in state.units.values():
                s.present, s.masked, s.scales = [], [], {}
            for key in [k for k in self.state.weights if k.partition(".")[0] == str(layer)]:
                del self.state.weights[key]      # its matrices are gone, and so are their sparsity masks
        for local, block in enumerate(self.blocks):
            for module in block.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    module.layer_idx = local
        return sorted(todo)

    # --- history -----------------------------------------------------------------------------------

    def record(self, op: str, kind: str, plan: dict[int, list[Any]], note: dict | None = None) -> None:
        """Append a step to the history (nothing when the plan is empty)."""
        if plan:
            key = {"head": "heads", "neuron": "neurons", "part": "layers", "block": "layers"}[kind]
            entry: dict[str, Any] = {"op": op, key: {str(k): list(v) for k, v in sorted(plan.items())}}
            if note:
                entry["note"] = note
            self.state.history.append(entry)

    def snapshot(self) -> PruningState:
        """A copy of the state's unit sets and history (not of the weights), for `restore`."""
        return PruningState(copy.deepcopy(self.state.layers), list(self.state.history), list(self.state.growing),
                            copy.deepcopy(self.state.weights))

    def restore(self, saved: PruningState) -> None:
        """Put back the masks, scales and history of a snapshot taken with the same units present."""
        for layer, (now, then) in enumerate(zip(self.state.layers, saved.layers)):
            for kind, s in now.units.items():
                if s.present != then.units[kind].present:
                    raise InvalidPruningPlan(f"Layer {layer} {kind}s were removed or grown since the snapshot; "
                                             "only masks can be restored.")
                s.masked, s.scales = list(then.units[kind].masked), dict(then.units[kind].scales)
        self.state.history[:] = saved.history
        self.state.growing[:] = saved.growing
        self.refresh_gates()


def _drop_bias(module: nn.Module) -> None:
    """Remove a projection's bias parameter. Conv1D's forward always adds a bias, so it gets a zero,
    non-persistent buffer in its place (not a parameter, not saved)."""
    bias = module.bias
    if bias is None:
        return
    del module._parameters["bias"]
    if isinstance(module, Conv1D):
        module.register_buffer("bias", torch.zeros_like(bias.detach()), persistent=False)
    else:
        module.bias = None


def block_layers(blocks: nn.ModuleList) -> list[int]:
    """The original layer index of each module of a block stack: 0..n-1, or fewer where blocks were removed
    (read from the stack's pruning state, if it has one; a stack no Sentinel state was bound to is unpruned)."""
    state = blocks.__dict__.get(_STATE)
    if state is None:
        return list(range(len(blocks)))
    layers = [layer for layer, s in enumerate(state.layers) if s.block]
    if len(layers) != len(blocks):
        raise CorruptModelError(f"The pruning state lists {len(layers)} blocks but the model has {len(blocks)}; "
                                "the model was changed outside Sentinel. Reload it.")
    return layers


def model_state(model: nn.Module) -> ModelState:
    """Bind `model` to its adapter and pruning state (raises UnsupportedModelError)."""
    return ModelState(model)
