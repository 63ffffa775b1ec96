"""What every architecture adapter declares, and the slicing derived from it once for all families.

An adapter states, as data, which projections hold each unit's slices (`SliceSpec`: module path,
axis, how channels are laid out per unit), which module attributes follow a unit count
(`AttrSpec`), where a unit kind's gate goes, and how a block's attention and MLP parts end
(`PartSpec`). Views, removal (`keep_units`) and growth (`insert_units`) are derived here from that
one declaration — Torch-Pruning's dependency-graph idea at our scale.

Orientation is handled here once: `nn.Linear` stores weight as (out, in), GPT-2's `Conv1D` as (in, out).
Indices here are LOCAL (positions among the units a module holds now); `sentinel.models.state`
maps them to original indices.
"""

from __future__ import annotations

import copy

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


UNIT_KINDS = ("head", "neuron")
PART_NAMES = ("attention", "mlp")


def _out_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, Conv1D) else 0


class EmptyInputConv1D(Conv1D):
    """A Conv1D left with no input channels (every unit feeding it removed): it returns its bias.

    Conv1D's own forward cannot reshape a 0-wide input; Linear needs no such stand-in.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*x.shape[:-1], self.nf)


def _set_width(module: nn.Module, axis: str, size: int) -> None:
    if isinstance(module, Conv1D):
        setattr(module, "nf" if axis == "out" else "nx", size)
        if axis == "in":
            module.__class__ = EmptyInputConv1D if size == 0 else Conv1D
    else:
        setattr(module, "out_features" if axis == "out" else "in_features", size)


def _change_weight(module: nn.Module, change: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Replace the weight by `change(weight, fill)`. Under a torch.nn.utils.prune reparametrization (weight-level
    sparsity, sentinel.sparsity) weight_orig and weight_mask change alike (new mask channels are 1: not pruned)
    and the weight is recomputed as prune does, so removing or growing units keeps the sparsity masks in line."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        orig = module.weight_orig
        module.weight_orig = nn.Parameter(change(orig.detach(), 0.0), requires_grad=orig.requires_grad)
        module.weight_mask = change(module.weight_mask, 1.0)
        module.weight = module.weight_orig * module.weight_mask
    else:
        module.weight = nn.Parameter(change(module.weight.detach(), 0.0), requires_grad=module.weight.requires_grad)


def _selected(dim: int, index: torch.Tensor) -> Callable[[torch.Tensor, float], torch.Tensor]:
    return lambda t, _fill: t.index_select(dim, index.to(t.device)).contiguous()


def _expanded(dim: int, size: int, index: torch.Tensor) -> Callable[[torch.Tensor, float], torch.Tensor]:
    def change(t: torch.Tensor, fill: float) -> torch.Tensor:
        shape = list(t.shape)
        shape[dim] = size
        return t.new_full(shape, fill).index_copy_(dim, index.to(t.device), t)
    return change


def keep_out_features(module: nn.Module, index: torch.Tensor) -> None:
    """Keep only the output channels `index` of a Linear or Conv1D (weight and bias)."""
    _change_weight(module, _selected(_out_dim(module), index))
    if module.bias is not None:
        module.bias = nn.Parameter(module.bias.detach().index_select(0, index.to(module.bias.device)).contiguous(),
                                   requires_grad=module.bias.requires_grad)
    _set_width(module, "out", len(index))


def keep_in_features(module: nn.Module, index: torch.Tensor) -> None:
    """Keep only the input channels `index` of a Linear or Conv1D (the bias is per output, untouched)."""
    _change_weight(module, _selected(1 - _out_dim(module), index))
    _set_width(module, "in", len(index))


def expand_out_features(module: nn.Module, size: int, index: torch.Tensor) -> None:
    """Inverse of keep_out_features: grow to `size` output channels; the current ones land at `index`, new ones are 0."""
    _change_weight(module, _expanded(_out_dim(module), size, index))
    if module.bias is not None:
        bias = module.bias.detach()
        module.bias = nn.Parameter(bias.new_zeros(size).index_copy_(0, index.to(bias.device), bias),
                                   requires_grad=module.bias.requires_grad)
    _set_width(module, "out", size)


def expand_in_features(module: nn.Module, size: int, index: torch.Tensor) -> None:
    """Inverse of keep_in_features: grow to `size` input channels; the current ones land at `index`, new ones are 0."""
    _change_weight(module, _expanded(1 - _out_dim(module), size, index))
    _set_width(module, "in", size)


def _trained_weight(module: nn.Module) -> torch.Tensor:
    """The weight Parameter training updates: `weight_orig` under a torch prune reparametrization (a sparse
    model being fine-tuned), whose `weight` is recomputed from it at every forward, else `weight`."""
    return module.weight_orig if hasattr(module, "weight_orig") else module.weight


def out_rows(module: nn.Module, channels: slice) -> torch.Tensor:
    """View of output channels `channels` as (len, in_features)."""
    if isinstance(module, Conv1D):
        return _trained_weight(module)[:, channels].T
    return _trained_weight(module)[channels]


def in_cols(module: nn.Module, channels: slice) -> torch.Tensor:
    """View of input channels `channels` as (out_features, len)."""
    if isinstance(module, Conv1D):
        return _trained_weight(module)[channels].T
    return _trained_weight(module)[:, channels]


def bias_of(module: nn.Module, channels: slice) -> torch.Tensor | None:
    return None if module.bias is None else module.bias[channels]


def head_range(head: int, head_dim: int, offset: int = 0) -> slice:
    return slice(offset + head * head_dim, offset + (head + 1) * head_dim)


def head_channels(heads: list[int], head_dim: int, offset: int = 0) -> torch.Tensor:
    """Channel indices of the given local units, in order, for a unit-major [units, width] layout."""
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    base = torch.tensor(heads, dtype=torch.long)[:, None] * head_dim + offset
    return (base + torch.arange(head_dim)).flatten()


def submodule(root: nn.Module, path: str) -> nn.Module:
    """`root.get_submodule(path)`, with "" meaning root itself."""
    return root.get_submodule(path) if path else root


@dataclass(frozen=True)
class SliceSpec:
    """One projection's share of every unit of a kind.

    `space` names the index that selects the slice ("head" query heads, "kv" key/value heads,
    "neuron"). Each unit owns `width` channels per role along `axis`; with several roles the
    projection holds one segment per role ([Q | K | V], GPT-2) or, `interleaved`, the roles inside
    each unit ([q k v] per head, GPT-NeoX) or, `grouped`, one block per unit of the later roles' space
    holding its share of the first role's units and then one slice of each later role (Falcon's new
    decoder: [q q .. k v] per K/V group, every group with the same number of query heads).
    """

    path: str
    axis: Literal["out", "in"]
    space: str
    width: int
    roles: tuple[str, ...]
    interleaved: bool = False
    # Per role, the space that counts its segment when the roles are different unit kinds in one fused
    # projection (Phi-3's qkv_proj: [q heads | k heads | v heads] = ("head", "kv", "kv")); None: all `space`.
    role_spaces: tuple[str, ...] | None = None
    grouped: bool = False                # per unit of role 1's space: its role-0 units, then one of each later role

    def space_of(self, role: int) -> str:
        return self.role_spaces[role] if self.role_spaces else self.space

    def spaces(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.space_of(r) for r in range(len(self.roles))))

    def _offset(self, role: int, counts: dict[str, int]) -> int:
        return sum(counts[self.space_of(r)] * self.width for r in range(role))

    def _slot(self, role: int, unit: int, counts: dict[str, int]) -> int:
        """Position (in widths) of local unit `unit` of `role` in a `grouped` projection holding `counts`."""
        groups = counts[self.space_of(1)]
        per_group = counts[self.space_of(0)] // groups if groups else 0
        stride = per_group + len(self.roles) - 1              # slots per group: its first-role units, then one each
        if role == 0:
            return unit // per_group * stride + unit % per_group
        return unit * stride + per_group + role - 1

    def channels(self, local: dict[str, list[int]], counts: dict[str, int]) -> torch.Tensor:
        """Channel indices (ascending) of local units `local[space]` when the projection holds `counts[space]`."""
        if self.interleaved:
            return head_channels(local[self.space], len(self.roles) * self.width)
        if self.grouped:
            slots = sorted(self._slot(r, u, counts) for r in range(len(self.roles)) for u in local[self.space_of(r)])
            return head_channels(slots, self.width)
        return torch.cat([head_channels(local[self.space_of(r)], self.width, self._offset(r, counts))
                          for r in range(len(self.roles))])

    def role_range(self, role: int, unit: dict[str, int], counts: dict[str, int]) -> slice:
        if self.interleaved:
            return head_range(unit[self.space] * len(self.roles) + role, self.width)
        if self.grouped:
            return head_range(self._slot(role, unit[self.space_of(role)], counts), self.width)
        return head_range(unit[self.space_of(role)], self.width, self._offset(role, counts))

    def size(self, counts: dict[str, int]) -> int:
        """Channels along `axis` for these unit counts."""
        return self._offset(len(self.roles), counts)


@dataclass(frozen=True)
class AttrSpec:
    """A module attribute that follows a unit count: value = count(space) x per_unit, or count(space) // count(per_space)."""

    path: str
    attr: str
    space: str
    per_unit: int = 1
    per_space: str | None = None
    optional: bool = False               # only some members of the family have it (set only where present)

    def value(self, counts: dict[str, int]) -> int | None:
        if self.per_space is None:
            return counts[self.space] * self.per_unit
        return counts[self.space] // counts[self.per_space] if counts[self.per_space] else None


@dataclass(frozen=True)
class UnitSpec:
    """Everything that moves with one unit kind in one block: its slices, its gate, its attributes.

    Paths are relative to `root` (the attention module for heads, the MLP for neurons), which is
    relative to the block. The gate multiplies the input of `gate` ([..., units * gate_width]).
    """

    kind: str
    root: str
    slices: tuple[SliceSpec, ...]
    gate: str
    gate_width: int
    attrs: tuple[AttrSpec, ...] = ()

    def spaces(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(space for s in self.slices for space in s.spaces()))


@dataclass(frozen=True)
class PartSpec:
    """How a block's attention or MLP part ends: gating `output`'s result zeroes the part's contribution.

    Pre-LN families add the part's output to the residual outside it (`residual_arg` None); post-LN
    BERT adds it inside `output`, whose argument `residual_arg` is the residual and whose `norm` is
    replaced by an identity when the part is removed. `bias` is the projection whose bias goes too.
    """

    name: str
    units: str
    output: str
    bias: str
    residual_arg: int | None = None
    norm: str | None = None


@dataclass(frozen=True)
class FamilySpec:
    """An adapter's whole declaration for one model (widths depend on its config)."""

    attention: str                      # path of the attention module in a block
    units: dict[str, UnitSpec]
    parts: tuple[PartSpec, ...]


def unit_views(root: nn.Module, spec: UnitSpec, unit: dict[str, int], counts: dict[str, int]) -> dict[str, Any]:
    """Views {role: [width, in] rows or [out, width] cols, role_bias: bias or None} of one unit.

    `unit` gives the unit's local index in each space it uses; writing into a view writes the model.
    """
    views: dict[str, Any] = {}
    for s in spec.slices:
        module = submodule(root, s.path)
        for r, role in enumerate(s.roles):
            channels = s.role_range(r, unit, counts)
            if s.axis == "out":
                views[role] = out_rows(module, channels)
                views[f"{role}_bias"] = bias_of(module, channels)
            else:
                views[role] = in_cols(module, channels)
    return views


def keep_units(root: nn.Module, spec: UnitSpec, keep: dict[str, list[int]], counts: dict[str, int]) -> None:
    """Physically keep only local units `keep[space]` of every slice; `counts` are the current sizes."""
    with torch.no_grad():
        for s in spec.slices:
            module = submodule(root, s.path)
            index = s.channels(keep, counts)
            (keep_out_features if s.axis == "out" else keep_in_features)(module, index)
    _set_attrs(root, spec, {space: len(units) for space, units in keep.items()})


def insert_units(root: nn.Module, spec: UnitSpec, kept_at: dict[str, list[int]], sizes: dict[str, int]) -> None:
    """Inverse of keep_units: grow every slice to `sizes[space]` units, current local unit i landing at
    kept_at[space][i]; new units get zero weights."""
    with torch.no_grad():
        for s in spec.slices:
            module = submodule(root, s.path)
            index = s.channels(kept_at, sizes)
            (expand_out_features if s.axis == "out" else expand_in_features)(module, s.size(sizes), index)
    _set_attrs(root, spec, sizes)


def _set_attrs(root: nn.Module, spec: UnitSpec, counts: dict[str, int]) -> None:
    for a in spec.attrs:
        value = a.value(counts)
        module = submodule(root, a.path)
        if a.attr.startswith("config."):    # a count the module reads from its config: give it a copy of its own
            if not getattr(module, "_sentinel_own_config", False):
                module.config = copy.copy(module.config)
                module._sentinel_own_config = True
            module, attr = module.config, a.attr.removeprefix("config.")
        else:
            attr = a.attr
        if value is not None and (not a.optional or hasattr(module, attr)):
            setattr(module, attr, value)


class FamilyAdapter(ABC):
    """One per architecture family: finds the blocks and declares, as data, where each unit's slices live.

    Subclasses implement `is_attention` (recognise the family's attention module), `spec(config)` and,
    when the config names things differently, `head_config` / `mlp_size`.
    """

    family: ClassVar[str]
    examples: ClassVar[str]
    tested_model_types: ClassVar[tuple[str, ...]]
    cache_kwarg: ClassVar[str] = "past_key_values"
    attention_path: ClassVar[str]       # attention module inside a block
    output_path: ClassVar[str]          # attention output projection, inside the attention module
    # The MLP output projection (down_proj / c_proj / fc2 / ...), as a path from the transformer block.
    mlp_output: ClassVar[str]
    emptied_path: ClassVar[str] = ""    # module (inside the attention) whose forward is replaced with no heads left

    def removal_refusal(self, attn: nn.Module) -> str | None:
        """Why removing some (not all) heads of this attention module cannot be exact, or None when it can.

        Checked before anything changes; masking stays available either way."""
        return None

    @abstractmethod
    def is_attention(self, module: nn.Module) -> bool:
        """Whether `module` is this family's (self-)attention module."""

    @abstractmethod
    def spec(self, config: Any) -> FamilySpec:
        """The family's slice declaration for a model with this config."""

    def head_config(self, config: Any) -> tuple[int, int, int, int]:
        """(num_heads, num_kv_heads, head_dim, hidden_size) of the original model."""
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        hidden = config.hidden_size
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        return heads, kv_heads, head_dim, hidden

    def mlp_size(self, config: Any) -> int:
        """MLP intermediate channels (neurons) per layer in the original model."""
        return config.intermediate_size

    def is_causal(self, config: Any) -> bool:
        return True

    # --- derived from the declaration ---------------------------------------------------------

    def blocks(self, model: nn.Module) -> nn.ModuleList | None:
        """The ModuleList of transformer blocks (each holding an attention module at `attention_path`)."""
        for module in model.modules():
            if isinstance(module, nn.ModuleList) and len(module) and all(
                self._holds_attention(block) for block in module
            ):
                return module
        return None

    def _holds_attention(self, block: nn.Module) -> bool:
        try:
            attn = block.get_submodule(self.attention_path)
        except AttributeError:
            return False
        return self.is_attention(attn)

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        """Attention modules in block order, or [] when the model does not have this family's layout."""
        blocks = self.blocks(model)
        return [] if blocks is None else [b.get_submodule(self.attention_path) for b in blocks]

    def output_projection(self, attn: nn.Module) -> nn.Module:
        """The projection whose input still holds each head's output separately (the head gate's place)."""
        return submodule(attn, self.output_path)

    def emptied_module(self, attn: nn.Module) -> nn.Module:
        """The module whose forward is replaced when a layer loses every head."""
        return submodule(attn, self.emptied_path)

    def empty_output(self, attn: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """What an attention module with no heads returns: the output projection of nothing (its bias).

        The projection really runs on a 0-wide input, so the gates on it (a masked attention part) still apply.
        """
        proj = self.output_projection(attn)
        return proj(hidden_states.new_zeros(*hidden_states.shape[:-1], 0))
