"""SparseGPT (Frantar & Alistarh 2023): prune each matrix and update its remaining weights to reconstruct
its calibration outputs, using the inverse Hessian H⁻¹ of the layer-wise least-squares problem, H = 2·XᵀX.

Sequential: the blocks are pruned in order, each from the inputs that the already-pruned earlier blocks
produce. This implementation runs the whole model forward for each block and stops it right after that
block (same result as caching block inputs, at the cost of re-running the earlier blocks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from sentinel.models.blocks import model_blocks
from sentinel.sparsity.targets import SparsityError, Target

logger = logging.getLogger(__name__)

SPARSEGPT_DAMPENING = 0.01              # λ = this × mean diag(H), added to H's diagonal (the paper's 1%)
SPARSEGPT_COLUMN_BLOCK = 128            # columns per lazy-update block (the paper's B)


class HessianAccumulator:
    """Running H = 2/n · Σ xᵀx over the n calibration tokens that reach one matrix (float64)."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.tokens = 0
        self._sum = torch.zeros(columns, columns, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of inputs [..., columns] (any leading shape)."""
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        if x.shape[1] != self.columns:
            raise SparsityError(f"Hessian of a {self.columns}-input matrix got inputs of width {x.shape[1]}.")
        if self._sum.device != x.device:
            self._sum = self._sum.to(x.device)
        self._sum += x.t() @ x
        self.tokens += x.shape[0]

    def hessian(self) -> torch.Tensor:
        """2·XᵀX / n (the scale does not change SparseGPT's result; it keeps the numbers tame)."""
        if self.tokens == 0:
            raise SparsityError("No calibration input reached this matrix; SparseGPT needs its inputs.")
        return 2 * self._sum / self.tokens


def _row_prune_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """True where pruned: the k lowest scores of each row."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, True)
    return mask


def sparsegpt_matrix(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float = 0.5,
                     pattern: tuple[int, int] | None = None, block_size: int = SPARSEGPT_COLUMN_BLOCK,
                     dampening: float = SPARSEGPT_DAMPENING,
                     pruned: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune one (out, in) matrix with SparseGPT; returns (new weight, keep mask), both (out, in).

    Unstructured: in each block of columns every row prunes its share of the lowest w²/[U]ᵢᵢ² (U the upper
    Cholesky factor of H⁻¹), so each row ends with exactly round(sparsity × in) zeros. N:M: each group of M
    columns prunes M−N per row. `pruned` (True = already zero) forces those weights out.
    """
    out_f, in_f = weight.shape
    if pattern is not None:
        n, m = pattern
        if in_f % m or block_size % m:
            raise SparsityError(f"N:M with M={m} needs the inputs ({in_f}) and the column block ({block_size}) "
                                f"divisible by {m}.")
    if block_size < 1:
        raise SparsityError(f"The SparseGPT column block must be at least 1, got {block_size}.")
    w = weight.detach().to(torch.float64).clone()
    h = hessian.detach().to(torch.float64, copy=True).to(w.device)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    damp = dampening * torch.mean(torch.diag(h))
    h += damp * torch.eye(in_f, dtype=h.dtype, device=h.device)
    try:
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except torch.linalg.LinAlgError:
        raise SparsityError("SparseGPT: the calibration Hessian is not positive definite even after dampening; "
                            "raise the dampening or give more calibration text.") from None
    forced = torch.zeros_like(w, dtype=torch.bool) if pruned is None else pruned.to(w.device, torch.bool)
    prune_mask = torch.zeros_like(w, dtype=torch.bool)
    for i1 in range(0, in_f, block_size):
        i2 = min(i1 + block_size, in_f)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        d = torch.diag(u1)
        if pattern is None:
            k = round(sparsity * i2) - round(sparsity * i1)        # cumulative rounding: exact per row overall
            scores = (w1 ** 2 / d[None, :] ** 2).masked_fill(forced[:, i1:i2], float("-inf"))
            mask1 = _row_prune_mask(scores, k) | forced[:, i1:i2]
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if pattern is not None and i % m == 0:
                scores = (w1[:, i:i + m] ** 2 / d[None, i:i + m] ** 2).masked_fill(forced[:, i1 + i:i1 + i + m],
                                                                                   float("-inf"))
                mask1[:, i:i + m] = _row_prune_mask(scores, m - n)
            col = w1[:, i]
            q = col.masked_fill(mask1[:, i], 0.0)
            q1[:, i] = q
            err = (col - q) / u1[i, i]
            w1[:, i:] -= err[:, None] @ u1[i, i:][None, :]
            err1[:, i] = err
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
        prune_mask[:, i1:i2] = mask1
    prune_mask |= dead[None, :]
    return w.masked_fill(prune_mask, 0.0).to(weight.dtype), ~prune_mask


class _StopForward(Exception):
    """Raised by a hook to end a calibration forward pass once the block being pruned has run."""


def _stop_after(module: nn.Module, args: tuple, output: object) -> None:
    raise _StopForward


def _groups(model: nn.Module, targets: Sequence[Target]) -> list[tuple[nn.Module | None, list[Target]]]:
    """Targets grouped by the transformer block holding them, in block order; the rest (e.g. lm_head) last."""
    left = list(targets)
    groups: list[tuple[nn.Module | None, list[Target]]] = []
    for block in model_blocks(model):
        inside = {id(m) for m in block.modules()}
        mine = [t for t in left if id(t.module) in inside]
        if mine:
            groups.append((block, mine))
            left = [t for t in left if id(t.module) not in inside]
    if left:
        groups.append((None, left))
    return groups


def sparsegpt_prune(model: nn.Module, targets: Sequence[Target], calibration: torch.Tensor,
                    install: Callable[[Target, torch.Tensor, torch.Tensor], None], sparsity: float = 0.5, pattern: tuple[int, int] | None = None,
                    per_matrix: Mapping[str, float] | None = None, block_size: int = SPARSEGPT_COLUMN_BLOCK,
                    dampening: float = SPARSEGPT_DAMPENING, batch_size: int = 4) -> dict[str, torch.Tensor]:
    """Sequential SparseGPT over the targets; `install(target, weight, keep)` must write each matrix's result
    into the model (the next block is calibrated through it). Returns the keep masks, (out, in)."""
    if calibration is None or calibration.ndim != 2 or calibration.shape[0] == 0:
        raise SparsityError("SparseGPT needs calibration text: give token blocks [n, seq] (at least one).")
    per_matrix = per_matrix or {}
    device = targets[0].parameter().device
    masks: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    try:
        for block, group in _groups(model, targets):
            accumulators = {t.name: HessianAccumulator(t.weight().shape[1]) for t in group}
            hooks = [t.module.register_forward_pre_hook(
                (lambda acc: lambda module, args: acc.add(args[0]))(accumulators[t.name])) for t in group]
            if block is not None:
                hooks.append(block.register_forward_hook(_stop_after))
            try:
                with torch.no_grad():
                    for batch in torch.split(calibration, batch_size):
                        try:
                            model(input_ids=batch.to(device))
                        except _StopForward:
                            pass                      # the block ran: its matrices' inputs are in
            finally:
                for h in hooks:
                    h.remove()
            for t in group:
                current = t.weight().detach()
                old = getattr(t.module, "weight_mask", None)
                weight, keep = sparsegpt_matrix(current.float(), accumulators[t.name].hessian(),
                                                per_matrix.get(t.name, sparsity), pattern, block_size, dampening,
                                                pruned=None if old is None else t.to_matrix(old) == 0)
                masks[t.name] = keep
                install(t, weight.to(current.dtype), keep)
            logger.info("SparseGPT pruned %d matrices of %s", len(group),
                        "a block" if block is not None else "the rest")
    finally:
        model.train(was_training)
    return masks
