"""Turn scores into masks (per layer, global, or N:M) and apply them with `torch.nn.utils.prune`.

A pruned matrix carries PyTorch's reparametrization (`weight_orig`, buffer `weight_mask`, and a forward
pre-hook computing weight = weight_orig × weight_mask), so pruned weights receive zero gradient and stay
exactly zero through training. `make_permanent` folds the masks into plain weights (`prune.remove`) so
the model saves as an ordinary checkpoint.

    config = SparsityConfig(method="wanda", sparsity=0.5)              # or pattern="2:4", scope="global"
    result = sparsify(model, config, calibration=blocks)               # blocks: LongTensor [n, seq]
    make_permanent(model); save_model(model, tokenizer, "out/")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from sentinel.models.int8 import int8_weights, is_int8
from sentinel.sparsity.cut import global_cut, global_keep
from sentinel.sparsity.scores import (DATA_METHODS, METHODS, PER_MATRIX_METHODS, compute_scores, input_norms,
                                      iter_scores)
from sentinel.sparsity.sparsegpt import SPARSEGPT_COLUMN_BLOCK, SPARSEGPT_DAMPENING, sparsegpt_prune
from sentinel.sparsity.targets import SparsityError, Target, find_targets

logger = logging.getLogger(__name__)

SCOPES = ("layer", "global", "row")     # row: each output row of each matrix alone (Wanda's comparison group)
ROW_ONLY_METHODS = ("sparsegpt",)       # prune every output row to the share: layer = row, no global ranking


def scopes_for(method: str) -> tuple[str, ...]:
    """The scopes `method` accepts: every one, or for SparseGPT (each row pruned to the share) layer and row."""
    return tuple(s for s in SCOPES if s != "global") if method in ROW_ONLY_METHODS else SCOPES


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """"2:4" -> (2, 4): keep N of every M consecutive input weights; None/"unstructured" -> None."""
    if pattern is None or pattern == "unstructured":
        return None
    try:
        n, m = (int(part) for part in pattern.split(":"))
    except ValueError:
        raise SparsityError(f"Pattern {pattern!r} is not N:M (e.g. 2:4) or 'unstructured'.") from None
    if not 0 < n < m:
        raise SparsityError(f"Pattern {pattern}: need 0 < N < M (keep N of every M weights), got N={n}, M={m}.")
    return n, m


@dataclass
class SparsityConfig:
    """What to prune: method, amount, scope and pattern (N:M fixes the sparsity at 1 - N/M)."""

    method: str = "l1"
    sparsity: float = 0.5
    scope: str = "layer"
    pattern: str | None = None            # None / "unstructured" or "N:M" along the input dimension
    seed: int = 0
    calibration_batch_size: int = 4
    include: tuple[str, ...] = ()         # extra modules outside the body, e.g. ("lm_head",) when untied
    per_matrix: dict[str, float] = field(default_factory=dict)   # per-target sparsity (layer scope), e.g. from sensitivity
    dampening: float = SPARSEGPT_DAMPENING      # sparsegpt: λ = dampening × mean diag(H) added to H's diagonal
    column_block: int = SPARSEGPT_COLUMN_BLOCK  # sparsegpt: columns per lazy-update block

    def validate(self) -> None:
        """Raise SparsityError naming the first bad setting."""
        if self.method not in METHODS:
            raise SparsityError(f"Unknown method {self.method!r}; choose one of {', '.join(METHODS)}.")
        if self.scope not in SCOPES:
            raise SparsityError(f"Unknown scope {self.scope!r}; choose layer, global or row.")
        nm = parse_pattern(self.pattern)
        if nm is None and not (isinstance(self.sparsity, (int, float)) and 0 <= self.sparsity < 1):
            raise SparsityError(f"Sparsity must be in [0, 1), got {self.sparsity}.")
        if nm is not None and self.scope != "layer":
            raise SparsityError("N:M patterns are chosen inside each group of M weights; use scope 'layer'.")
        for name, value in self.per_matrix.items():
            if not 0 <= value < 1:
                raise SparsityError(f"Sparsity for {name} must be in [0, 1), got {value}.")
        if self.scope not in scopes_for(self.method):
            raise SparsityError(f"{self.method} prunes each output row of each matrix to the sparsity; use scope "
                                f"{' or '.join(repr(s) for s in scopes_for(self.method))} (the same for "
                                f"{self.method}), not {self.scope!r}.")
        if self.method == "sparsegpt":
            if not self.dampening > 0:
                raise SparsityError(f"SparseGPT dampening must be > 0 (e.g. 0.01), got {self.dampening}.")
            if self.column_block < 1:
                raise SparsityError(f"SparseGPT column block must be at least 1, got {self.column_block}.")
            if nm is not None and self.column_block % nm[1]:
                raise SparsityError(f"SparseGPT with {self.pattern} needs the column block divisible by {nm[1]}, "
                                    f"got {self.column_block} (e.g. {SPARSEGPT_COLUMN_BLOCK}).")
        if self.per_matrix and (self.scope != "layer" or nm is not None):
            raise SparsityError("Per-matrix sparsities need scope 'layer' and an unstructured pattern.")

    @property
    def target_sparsity(self) -> float:
        nm = parse_pattern(self.pattern)
        return self.sparsity if nm is None else 1 - nm[0] / nm[1]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["include"] = list(self.include)
        return data


def _keep_k_smallest_out(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask of `scores`' shape with exactly the k lowest scores set False."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        keep[torch.topk(scores.flatten(), k, largest=False).indices] = False
    return keep.view_as(scores)


def _keep_row_smallest_out(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask of an (out, in) matrix with exactly the k lowest scores of every row set False."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        keep.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, False)
    return keep


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the N highest scores of every M consecutive input weights in each row of an (out, in) matrix."""
    out_f, in_f = scores.shape
    if in_f % m:
        raise SparsityError(f"An N:M pattern with M={m} needs the input dimension divisible by {m}; "
                            f"a matrix has {in_f} inputs.")
    groups = scores.reshape(out_f, in_f // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.topk(groups, n, dim=2).indices, True)
    return keep.reshape(out_f, in_f)


def select_masks(scores: Mapping[str, torch.Tensor], sparsity: float, scope: str = "layer",
                 pattern: tuple[int, int] | None = None,
                 per_matrix: Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks (True = kept), (out, in), with round(sparsity × size) zeros per matrix (layer), overall
    (global), or round(sparsity × inputs) in every output row (row: the comparison group of Wanda's paper)."""
    if pattern is not None:
        return {name: nm_mask(s, *pattern) for name, s in scores.items()}
    if scope == "row":
        return {name: _keep_row_smallest_out(s, round(sparsity * s.shape[1])) for name, s in scores.items()}
    if scope == "layer":
        per_matrix = per_matrix or {}
        return {name: _keep_k_smallest_out(s, round(per_matrix.get(name, sparsity) * s.numel()))
                for name, s in scores.items()}
    flat = torch.cat([s.flatten().cpu() for s in scores.values()])
    keep = _keep_k_smallest_out(flat, round(sparsity * flat.numel()))
    masks, offset = {}, 0
    for name, s in scores.items():
        masks[name] = keep[offset:offset + s.numel()].view_as(s).to(s.device)
        offset += s.numel()
    return masks


def is_sparse_pruned(module: nn.Module) -> bool:
    """True when the module carries a torch.nn.utils.prune reparametrization of its weight."""
    return prune.is_pruned(module) and hasattr(module, "weight_mask")


def apply_masks(targets: Sequence[Target], masks: Mapping[str, torch.Tensor]) -> None:
    """Install (first time: prune.custom_from_mask) or update in place (already pruned) each target's mask.

    Updating in place keeps the same Parameter objects, so an optimizer that holds them keeps working; the
    new mask is intersected with the old one, so a pruned weight is never revived (like PyTorch's own
    iterative pruning, which multiplies masks in a PruningContainer).
    """
    for t in targets:
        if t.name not in masks:
            continue
        mask = t.to_storage(masks[t.name]).to(dtype=torch.float32)
        module = t.module
        if is_sparse_pruned(module):
            with torch.no_grad():
                module.weight_mask.mul_(mask.to(module.weight_mask))      # old zeros never come back
                module.weight = module.weight_orig * module.weight_mask   # what prune's pre-hook computes
        else:
            prune.custom_from_mask(module, "weight", mask.to(module.weight.device, dtype=module.weight.dtype))


def zero_pruned_(targets: Sequence[Target]) -> None:
    """Set weight_orig to exactly 0 where masked (optimizer momentum / weight decay may have moved it) and refresh weight."""
    with torch.no_grad():
        for t in targets:
            module = t.module
            if is_sparse_pruned(module):
                module.weight_orig.mul_(module.weight_mask)
                module.weight = module.weight_orig * module.weight_mask


def make_permanent(model: nn.Module) -> int:
    """Fold every prune reparametrization into a plain `weight` (prune.remove); returns how many modules.

    The matrices stay recorded as sparse (sentinel.sparsity.record), so saving records their masks and
    every later fine-tune holds their zeros.
    """
    from sentinel.sparsity.record import record_installed

    record_installed(model)
    count = 0
    for module in model.modules():
        if is_sparse_pruned(module):
            prune.remove(module, "weight")
            count += 1
    return count


@dataclass
class MatrixSparsity:
    """Zeros of one matrix."""

    name: str
    layer: int | None
    matrix: str
    zeros: int
    size: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0


@dataclass
class SparsityStats:
    """Exact zero counts of the targets and non-zero parameters of the whole model."""

    matrices: list[MatrixSparsity]
    total_parameters: int           # unique parameters of the model (tied counted once)
    nonzero_parameters: int

    @property
    def target_zeros(self) -> int:
        return sum(m.zeros for m in self.matrices)

    @property
    def target_size(self) -> int:
        return sum(m.size for m in self.matrices)

    @property
    def sparsity(self) -> float:
        """Zeros / weights over the targeted matrices."""
        return self.target_zeros / self.target_size if self.target_size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "target_zeros": self.target_zeros, "target_weights": self.target_size,
                "total_parameters": self.total_parameters, "nonzero_parameters": self.nonzero_parameters,
                "matrices": [{**asdict(m), "sparsity": m.sparsity} for m in self.matrices]}


def sparsity_stats(model: nn.Module, targets: Sequence[Target] | None = None) -> SparsityStats:
    """Count exact zeros of the effective body weights and the non-zero parameters of the whole model
    (of an int8 model: its int8 matrices, whose zeros are the sparse model's zeros)."""
    if targets is None and is_int8(model):
        return _int8_stats(model)
    targets = find_targets(model) if targets is None else targets
    with torch.no_grad():
        matrices = []
        for t in targets:
            w = t.weight()
            matrices.append(MatrixSparsity(t.name, t.layer, t.matrix, int((w == 0).sum()), w.numel()))
        total = nonzero = 0
        effective = {id(t.parameter()): t.weight() for t in targets}
        for p in model.parameters():            # unique parameters (tied embeddings once)
            value = effective.get(id(p), p)
            total += p.numel()
            nonzero += int((value != 0).sum())
    return SparsityStats(matrices, total, nonzero)


def _int8_stats(model: nn.Module) -> SparsityStats:
    """sparsity_stats of an int8 model: its int8 matrices, named like Targets (layer, path inside the block)."""
    tensors = int8_weights(model)
    matrices = []
    for name, (weight, _) in tensors.items():
        numbers = [part for part in name.split(".") if part.isdigit()]
        layer = int(numbers[0]) if numbers else None
        matrix = name.split(f".{layer}.", 1)[-1] if layer is not None else name
        matrices.append(MatrixSparsity(name, layer, matrix, int((weight == 0).sum()), weight.numel()))
    with torch.no_grad():
        values = [*{id(p): p for p in model.parameters()}.values()]
        values += [t for weight, bias in tensors.values() for t in (weight, bias) if t is not None]
        total = sum(t.numel() for t in values)
        nonzero = sum(int((t != 0).sum()) for t in values)
    return SparsityStats(matrices, total, nonzero)


def _install_updated(target: Target, weight: torch.Tensor, keep: torch.Tensor) -> None:
    """Write a method's updated (out, in) weight into the target, then record its mask like every method's."""
    module = target.module
    with torch.no_grad():
        parameter = module.weight_orig if is_sparse_pruned(module) else module.weight
        parameter.copy_(target.to_storage(weight).to(parameter))
    apply_masks([target], {target.name: keep})


@dataclass
class SparsifyResult:
    """What `sparsify` did: the config, achieved zeros, and the seconds scoring took."""

    config: SparsityConfig
    stats: SparsityStats
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "seconds": self.seconds, **self.stats.to_dict()}


def _zero_in_place(target: Target, keep: torch.Tensor) -> None:
    """Zero the pruned weights of an unmasked matrix directly (no reparametrization: no extra copies)."""
    with torch.no_grad():
        parameter = target.module.weight
        parameter.mul_(target.to_storage(keep).to(device=parameter.device, dtype=parameter.dtype))


def _sparsify_per_matrix(model: nn.Module, targets: Sequence[Target], config: SparsityConfig,
                         calibration: torch.Tensor | None, hold: bool, zeros_are_mask: set[str]) -> None:
    """Score, select and install one matrix at a time (PER_MATRIX_METHODS): peak memory is the model plus one
    matrix's scores (and, with `hold`, the masks). The masks equal `select_masks` on all scores at once."""
    norms = None
    if config.method == "wanda":
        norms = input_norms(model, targets, calibration, config.calibration_batch_size)

    def passes() -> Iterable[tuple[Target, torch.Tensor]]:
        return iter_scores(model, targets, config.method, seed=config.seed, norms=norms,
                           zeros_are_mask=zeros_are_mask)

    pattern = parse_pattern(config.pattern)
    cut: tuple[int, int] | None = None
    if config.scope == "global" and pattern is None:
        k = round(config.sparsity * sum(t.numel for t in targets))
        cut = global_cut(passes, k) if k > 0 else None
    ties_left = cut[1] if cut is not None else 0
    for t, scores in passes():
        if cut is not None:
            keep, ties_left = global_keep(scores, cut[0], ties_left)
        elif config.scope == "global" and pattern is None:
            keep = torch.ones_like(scores, dtype=torch.bool)      # 0 of the weights to prune
        else:
            keep = select_masks({t.name: scores}, config.sparsity, config.scope, pattern, config.per_matrix)[t.name]
        del scores
        if hold or is_sparse_pruned(t.module):
            apply_masks([t], {t.name: keep})
        else:
            _zero_in_place(t, keep)


def sparsify(model: nn.Module, config: SparsityConfig, calibration: torch.Tensor | None = None,
             targets: Sequence[Target] | None = None, hold: bool = True) -> SparsifyResult:
    """One-shot: score the targets, select masks, install them with torch.nn.utils.prune (model in place).

    `calibration` (LongTensor [n, seq] of token ids) is needed by gradient, snip, wanda and sparsegpt
    (which also updates the kept weights, block by block; see sparsity/sparsegpt.py). l1, l2, random and wanda
    work one matrix at a time. `hold=False` zeros the weights in place instead of installing masks (the lean
    path for a one-shot prune that is saved next: the saved record makes every later load and fine-tune hold
    the zeros); a matrix that already carries a mask keeps it either way.
    """
    config.validate()
    if config.method in DATA_METHODS and calibration is None:
        raise SparsityError(f"Method {config.method} needs calibration text (token blocks).")
    targets = find_targets(model, config.include) if targets is None else list(targets)
    unknown = sorted(set(config.per_matrix) - {t.name for t in targets})
    if unknown:
        raise SparsityError(f"Per-matrix sparsity names {unknown[0]}, which is not a target of this model.")
    from sentinel.sparsity.record import install_recorded_masks, record_sparsity, recorded_targets

    start = time.perf_counter()
    if config.method in PER_MATRIX_METHODS:
        # a sparse model's zeros are masks already: held (installed) or, lean, scored -inf so none is revived
        zeros_are_mask = set() if hold else {t.name for t in recorded_targets(model)}
        if hold:
            install_recorded_masks(model)
        _sparsify_per_matrix(model, targets, config, calibration, hold, zeros_are_mask)
    elif config.method == "sparsegpt":
        install_recorded_masks(model)
        sparsegpt_prune(model, targets, calibration, _install_updated, config.sparsity,
                        parse_pattern(config.pattern), config.per_matrix, config.column_block, config.dampening,
                        config.calibration_batch_size)
    else:
        install_recorded_masks(model)
        scores = compute_scores(model, targets, config.method, calibration, config.calibration_batch_size,
                                config.seed)
        masks = select_masks(scores, config.sparsity, config.scope, parse_pattern(config.pattern), config.per_matrix)
        apply_masks(targets, masks)
    record_sparsity(model, targets, config.pattern, config.method)
    stats = sparsity_stats(model, targets)
    seconds = time.perf_counter() - start
    logger.info("Sparsified %d matrices with %s (%s, %s): %.1f%% zeros", len(targets), config.method, config.scope,
                config.pattern or "unstructured", 100 * stats.sparsity)
    return SparsifyResult(config, stats, seconds)
