"""Forward FLOPs per token, read off a model's shapes: the one count every FLOP-based prediction uses.

Per token at a context of `seq_len` tokens:
- 2 FLOPs (one multiply-add) per weight of every linear projection;
- 4 × seq_len × head_dim per present query head: the scores (Q Kᵀ) and the weighted values (P V), the
  full-context bound.
`lm_head=False` counts the transformer body: the attention and MLP projections of the present blocks (what
budgets, targets, `sentinel compress` and bench/gpu_check predict from, since only the body can be pruned).
`lm_head=True` adds every linear layer outside the blocks — the LM head, and where a family has them the
projections around it (BERT's MLM transform, OPT's project_in/out) — the whole-model count the paired speed
comparison predicts from. Embedding lookups are never counted (a lookup, no multiply). Masked units are still
in the weights and still run, so masking never lowers the count; removed units, parts and blocks are gone.
"""

from __future__ import annotations

from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.models.adapters.base import submodule
from sentinel.models.state import ModelState, model_state


def block_projections(state: ModelState, layer: int) -> list[nn.Module]:
    """Every projection that holds unit slices in present block `layer` (each module once)."""
    block = state.block(layer)
    found: dict[int, nn.Module] = {}
    for spec in state.spec.units.values():
        for s in spec.slices:
            module = submodule(block, ".".join(p for p in (spec.root, s.path) if p))
            found[id(module)] = module
    return list(found.values())


def block_flops(state: ModelState, layer: int, seq_len: int) -> int:
    """FLOPs per token of present block `layer`: its projections plus its present heads' attention."""
    weights = sum(m.weight.numel() for m in block_projections(state, layer))
    return 2 * weights + 4 * state.head_dim * seq_len * len(state.present(layer))


def head_flops(model: nn.Module) -> int:
    """FLOPs per token of the linear layers outside the transformer blocks (the LM head and its neighbours)."""
    inside = {id(m) for m in model_state(model).blocks.modules()}
    return 2 * sum(m.weight.numel() for m in model.modules()
                   if isinstance(m, (nn.Linear, Conv1D)) and id(m) not in inside)


def forward_flops(model: nn.Module, seq_len: int, *, lm_head: bool) -> int:
    """Forward FLOPs per token at `seq_len`: the body, plus the linear layers outside it when `lm_head`
    (see the module doc)."""
    state = model_state(model)
    body = sum(block_flops(state, layer, seq_len) for layer in state.present_blocks())
    return body + (head_flops(model) if lm_head else 0)
