"""An exact global threshold over many matrices' scores, found without holding them together (one matrix's
scores at a time), so weight sparsity's global scope costs one matrix of memory, not the model's size."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def _order_keys(scores: torch.Tensor) -> torch.Tensor:
    """int64 keys with the same order as float32 `scores` (-inf first), so a threshold can be searched exactly."""
    bits = scores.float().contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, -(bits & 0x7FFFFFFF) - 1, bits)


def global_cut(passes: Callable[[], Iterable[tuple[Any, torch.Tensor]]], k: int) -> tuple[int, int]:
    """(key, ties) of the k-th lowest score (k ≥ 1) over every matrix, without holding the matrices together:
    prune every score whose order key is below `key`, then the first `ties` scores equal to it (in target order,
    flat index order). Each call of `passes()` yields the scores one matrix at a time; every pass counts the keys
    in 1024 buckets of the range that holds the k-th lowest, so five passes pin the exact float32 value."""
    lo, hi, below = -(2 ** 31), 2 ** 31 - 1, 0     # the k-th lowest key lies in [lo, hi]; `below` keys are < lo
    while lo < hi:
        width = hi - lo + 1
        edges = lo + torch.linspace(0, width, steps=min(width, 1024) + 1, dtype=torch.float64).floor().to(torch.int64)
        buckets = len(edges) - 1                   # bucket j holds keys in [edges[j], edges[j + 1])
        counts = torch.zeros(buckets + 2, dtype=torch.int64)
        for _, scores in passes():
            keys = _order_keys(scores).flatten().cpu()
            counts += torch.bincount(torch.bucketize(keys, edges, right=True), minlength=buckets + 2)
        within = below + torch.cumsum(counts[1:buckets + 1], 0)    # within[j]: keys < edges[j + 1]
        j = int(torch.searchsorted(within, torch.tensor([k]))[0])   # first bucket reaching k
        lo, hi = int(edges[j]), int(edges[j + 1]) - 1
        below = below if j == 0 else int(within[j - 1])
    return lo, k - below


def global_keep(scores: torch.Tensor, key: int, ties_left: int) -> tuple[torch.Tensor, int]:
    """This matrix's keep-mask under a global cut, and the ties still to prune after it."""
    keys = _order_keys(scores)
    keep = keys > key
    if ties_left > 0:
        tied = (keys == key).flatten().nonzero().flatten()
        keep.view(-1)[tied[ties_left:]] = True              # past the quota: kept
        ties_left -= min(ties_left, len(tied))
    else:
        keep |= keys == key
    return keep, ties_left
