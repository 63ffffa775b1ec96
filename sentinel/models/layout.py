"""HeadLayout: what the rest of Sentinel knows about a model's attention heads, whatever its family."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class HeadLayout:
    """Shape of a model's attention, in original head indices.

    `present[layer]` lists the original heads still physically in the weights of that layer
    (all of them until `remove_heads` runs); masking does not change it. Derived from the model's
    live pruning state (`sentinel.models.state`) each time it is asked for.
    """

    family: str
    model_type: str
    num_layers: int
    num_heads: int          # query heads per layer in the original model
    num_kv_heads: int       # key/value heads per layer in the original model (== num_heads without GQA)
    head_dim: int
    hidden_size: int
    is_causal: bool
    present: tuple[tuple[int, ...], ...]
    num_neurons: int = 0                                   # MLP intermediate channels per layer, original model
    present_neurons: tuple[int, ...] = ()                  # how many of them each layer still holds
    present_blocks: tuple[int, ...] = ()                   # original layers whose block is still in the model

    @property
    def kv_group_size(self) -> int:
        """How many query heads share one key/value head (1 without grouped-query attention)."""
        return self.num_heads // self.num_kv_heads

    def kv_head_of(self, head: int) -> int:
        """The original key/value head that original query head `head` reads."""
        return head // self.kv_group_size

    def kv_group(self, kv_head: int) -> list[int]:
        """The original query heads that share key/value head `kv_head`."""
        size = self.kv_group_size
        return list(range(kv_head * size, (kv_head + 1) * size))

    @property
    def total_heads(self) -> int:
        return self.num_layers * self.num_heads

    def to_dict(self) -> dict:
        data = asdict(self)
        data["present"] = [list(p) for p in self.present]
        return data


@dataclass(frozen=True)
class HeadWeights:
    """Views of one head's weights, all in (out_features, in_features) orientation.

    q/k/v rows are the head's output channels of the query/key/value projections; o columns are
    the head's input channels of the output projection. Writing into these views writes the model.
    For grouped-query attention k and v belong to the key/value head the query head shares.
    """

    q: torch.Tensor          # [head_dim, hidden]
    k: torch.Tensor          # [head_dim, hidden]
    v: torch.Tensor          # [head_dim, hidden]
    o: torch.Tensor          # [hidden, head_dim]
    q_bias: torch.Tensor | None
    k_bias: torch.Tensor | None
    v_bias: torch.Tensor | None
