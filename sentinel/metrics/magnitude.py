"""Weight magnitude per head: ||W_Q,h|| + ||W_K,h|| + ||W_V,h|| + ||W_O,h|| (Frobenius norms, biases excluded).

The slices come from the engine's `head_weights` views, which are already in (out, in)
orientation for every family (GPT-2's Conv1D included), so the norm is taken over exactly the
head's own rows of Q/K/V and its own columns of O.

Grouped-query attention: a K/V head is shared by `kv_group_size` query heads, so each of them is
credited with an equal share, ||W_K,g|| / G and ||W_V,g|| / G. The scores of a layer then add up to
the total norm of its attention slices, as they do without GQA, and a whole group's score counts
its K/V weights once.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sentinel.metrics.scores import HeadScores, active_grid
from sentinel.models.heads import model_heads


def weight_magnitude(model: nn.Module) -> HeadScores:
    """Per-head weight magnitude over original heads; NaN for masked or removed heads."""
    heads = model_heads(model)
    active = active_grid(model)
    values = torch.full((heads.num_layers, heads.num_heads), math.nan, dtype=torch.float64)
    share = 1.0 / heads.kv_group_size
    with torch.no_grad():
        for layer, head in active.nonzero().tolist():
            w = heads.head_weights(layer, head)
            q, o = w.q.double().norm(), w.o.double().norm()
            kv = w.k.double().norm() + w.v.double().norm()
            values[layer, head] = float(q + o + share * kv)
    return HeadScores("magnitude", values, {"kv_share": share})
