"""Weight-level sparsity: zero individual weights of the body's Linear/Conv1D matrices (shapes never change).

Separate from unit pruning (sentinel.pruning), which removes heads, neurons and layers. Built on
torch.nn.utils.prune: see masks.py (selection and masks), scores.py (l1, l2, random, gradient, snip,
wanda), schedule.py (keeping zeros through fine-tuning, gradual pruning, lottery tickets),
record.py (which matrices' zeros are a mask: saved, loaded, held by every fine-tune),
sensitivity.py, storage.py (compressed sparse checkpoints, sizes), quantize.py (int8).
"""

from sentinel.sparsity.masks import (
    SCOPES, SparsifyResult, SparsityConfig, SparsityStats, apply_masks, make_permanent, nm_mask, parse_pattern,
    select_masks, sparsify, sparsity_stats, zero_pruned_,
)
from sentinel.sparsity.scores import METHODS, compute_scores
from sentinel.sparsity.targets import SparsityError, Target, find_targets

__all__ = [
    "METHODS", "SCOPES", "SparsifyResult", "SparsityConfig", "SparsityError", "SparsityStats", "Target",
    "apply_masks", "compute_scores", "find_targets", "make_permanent", "nm_mask", "parse_pattern", "select_masks",
    "sparsify", "sparsity_stats", "zero_pruned_",
]
