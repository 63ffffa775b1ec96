"""Weight sparsity as a property of the model: which matrices' zeros are a mask, kept in its pruning state.

`sparsify` (and gradual / lottery runs) record each masked matrix in the model's pruning state
(`PruningState.weights`, keyed by original layer and path inside the block, see `matrix_key`); save_model
writes the record into sentinel_pruning.json and load_model reads it back. The masks themselves are the
zeros: `install_recorded_masks` rebuilds each recorded matrix's mask from its zeros (weight != 0) and
installs it with `apply_masks`, which is how every fine-tune holds them (sentinel.sparsity.schedule.hold_zeros).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sentinel.models.state import model_state
from sentinel.sparsity.masks import apply_masks, is_sparse_pruned, parse_pattern
from sentinel.sparsity.targets import Target, find_targets

logger = logging.getLogger(__name__)


def matrix_key(target: Target) -> str:
    """The record's name of a target: "<original layer>.<path in block>", or its module path outside the body."""
    return target.name if target.layer is None else f"{target.layer}.{target.matrix}"


def recorded(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The model's record of masked matrices ({} for a dense model), live: changes write the state."""
    return model_state(model).state.weights


def record_sparsity(model: nn.Module, targets: Sequence[Target], pattern: str | None, method: str | None) -> None:
    """Note that the targets' zeros are a sparsity mask (of `pattern`, chosen by `method`)."""
    weights = recorded(model)
    for t in targets:
        weights[matrix_key(t)] = {"pattern": pattern or "unstructured", "method": method}


def recorded_targets(model: nn.Module) -> list[Target]:
    """The targets whose zeros the model's record says are a mask (body matrices and recorded extra modules)."""
    weights = recorded(model)
    if not weights:
        return []
    extra = tuple(key for key in weights if not key.partition(".")[0].isdigit())
    return [t for t in find_targets(model, extra) if matrix_key(t) in weights]


def pattern_holds(matrix: torch.Tensor, pattern: str | None) -> bool:
    """Whether an (out, in) matrix has at most N non-zeros in every M consecutive inputs (always for unstructured)."""
    nm = parse_pattern(pattern)
    if nm is None:
        return True
    n, m = nm
    out_f, in_f = matrix.shape
    if in_f % m:
        return False
    return bool(((matrix != 0).reshape(out_f, in_f // m, m).sum(-1) <= n).all())


def install_recorded_masks(model: nn.Module) -> list[Target]:
    """Install a mask (weight != 0) on every recorded matrix that has none yet; returns those installed.

    A recorded N:M matrix whose zeros no longer form the pattern (its input dimension was cut by a removal)
    keeps its zeros all the same and is recorded as unstructured from now on, with a warning.
    """
    weights = recorded(model)
    installed = []
    for t in recorded_targets(model):
        if is_sparse_pruned(t.module) or t.numel == 0:
            continue
        entry = weights[matrix_key(t)]
        with torch.no_grad():
            matrix = t.weight()
            if not pattern_holds(matrix, entry.get("pattern")):
                logger.warning("The zeros of %s no longer form its %s pattern (its shape changed); they are held "
                               "as an unstructured mask.", t.name, entry.get("pattern"))
                entry["pattern"] = "unstructured"
            apply_masks([t], {t.name: matrix != 0})
        installed.append(t)
    if installed:
        logger.info("Holding the zeros of %d sparse matrices as masks", len(installed))
    return installed


def record_installed(model: nn.Module) -> None:
    """Record every matrix that carries a mask but no record yet (masks installed by hand with apply_masks)."""
    pruned = [name for name, module in model.named_modules() if is_sparse_pruned(module)]
    if not pruned:
        return
    body = {t.name: t for t in find_targets(model)}
    extra = tuple(name for name in pruned if name not in body)
    weights = recorded(model)
    new = [t for t in find_targets(model, extra) if is_sparse_pruned(t.module) and matrix_key(t) not in weights]
    record_sparsity(model, new, None, None)


def pruned_targets(model: nn.Module) -> list[Target]:
    """The targets (body, and reparametrized or recorded modules outside it) that carry a mask now."""
    if not any(is_sparse_pruned(m) for m in model.modules()):
        return []
    body = {t.name for t in find_targets(model)}
    extra = {name for name, module in model.named_modules() if is_sparse_pruned(module) and name not in body}
    extra |= {key for key in recorded(model) if not key.partition(".")[0].isdigit()}
    return [t for t in find_targets(model, tuple(sorted(extra))) if is_sparse_pruned(t.module)]
