"""Importance scores for individual weights; lower scores are pruned first. All scores are (out, in).

    l1       |w|
    l2       w²        (same ranking as l1 for single weights; kept because the guide names both)
    random   uniform(0, 1) from a seeded generator
    gradient |G|       G = Σ_b ∂L_b/∂w, the gradient of the mean LM loss summed over calibration batches
    snip     |w ⊙ G|   (Lee et al. 2019, connection sensitivity)
    wanda    |w_ij| · ‖x_j‖₂, x_j = input feature j over every calibration token (Sun et al. 2023)

Weights that are already pruned score -inf, so a new mask always contains the old zeros (sparsity only grows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from sentinel.sparsity.targets import SparsityError, Target

logger = logging.getLogger(__name__)

METHODS = ("l1", "l2", "random", "gradient", "snip", "wanda", "sparsegpt")
DATA_METHODS = ("gradient", "snip", "wanda", "sparsegpt")
UPDATING_METHODS = ("sparsegpt",)     # change the kept weights too, so they have no score (see sparsegpt.py)

LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def causal_lm_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of a Hugging Face causal LM on a batch of token ids [batch, pos]."""
    return model(input_ids=input_ids, labels=input_ids).loss


def _batches(calibration: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    if calibration is None or calibration.ndim != 2 or calibration.shape[0] == 0:
        raise SparsityError("This method needs calibration text: give token blocks [n, seq] (at least one).")
    return list(torch.split(calibration, batch_size))


def accumulated_gradients(model: nn.Module, targets: Sequence[Target], calibration: torch.Tensor,
                          batch_size: int = 4, loss_fn: LossFn = causal_lm_loss) -> dict[str, torch.Tensor]:
    """G = Σ_b ∂L_b/∂w per target, (out, in); every .grad of the model is left as it was."""
    params = [t.parameter() for t in targets]
    saved = {p: p.grad for p in model.parameters()}
    device = params[0].device
    for p in saved:
        p.grad = None
    was_training = model.training
    model.eval()                                   # no dropout: the scores are deterministic
    try:
        with torch.enable_grad():
            for batch in _batches(calibration, batch_size):
                loss_fn(model, batch.to(device)).backward()
        grads = {t.name: t.to_matrix(p.grad.detach().clone()) if p.grad is not None else None
                 for t, p in zip(targets, params)}
    finally:
        model.train(was_training)
        for p, g in saved.items():
            p.grad = g
    missing = [name for name, g in grads.items() if g is None]
    if missing:
        raise SparsityError(f"No gradient reached {missing[0]}; it does not take part in the loss.")
    return grads


def input_norms(model: nn.Module, targets: Sequence[Target], calibration: torch.Tensor,
                batch_size: int = 4) -> dict[str, torch.Tensor]:
    """‖x_j‖₂ over every calibration token of each target's input feature j: {name: [in]}."""
    sums: dict[str, torch.Tensor] = {}
    hooks = []

    def hook_for(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().float()                      # [batch, pos, in]
            squares = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
            sums[name] = squares if name not in sums else sums[name] + squares
        return hook

    for t in targets:
        hooks.append(t.module.register_forward_pre_hook(hook_for(t.name)))
    device = targets[0].parameter().device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in _batches(calibration, batch_size):
                model(input_ids=batch.to(device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {name: value.sqrt() for name, value in sums.items()}


def compute_scores(model: nn.Module, targets: Sequence[Target], method: str,
                   calibration: torch.Tensor | None = None, batch_size: int = 4, seed: int = 0,
                   loss_fn: LossFn = causal_lm_loss) -> dict[str, torch.Tensor]:
    """Scores per target, (out, in), float32; already-pruned weights score -inf (see module doc)."""
    if method not in METHODS:
        raise SparsityError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    if method in UPDATING_METHODS:
        raise SparsityError(f"{method} prunes and updates weights together and has no scores; use sparsify().")
    weights = {t.name: t.weight().detach().float() for t in targets}
    if method == "l1":
        scores = {n: w.abs() for n, w in weights.items()}
    elif method == "l2":
        scores = {n: w.pow(2) for n, w in weights.items()}
    elif method == "random":
        generator = torch.Generator().manual_seed(seed)
        scores = {n: torch.rand(w.shape, generator=generator).to(w.device) for n, w in weights.items()}
    elif method in ("gradient", "snip"):
        grads = accumulated_gradients(model, targets, calibration, batch_size, loss_fn)
        if method == "gradient":
            scores = {n: grads[n].float().abs() for n in weights}
        else:
            scores = {n: (weights[n] * grads[n].float()).abs() for n in weights}
    else:  # wanda
        norms = input_norms(model, targets, calibration, batch_size)
        scores = {n: w.abs() * norms[n].to(w.device)[None, :] for n, w in weights.items()}
    for t in targets:
        mask = getattr(t.module, "weight_mask", None)
        if mask is not None:
            scores[t.name] = scores[t.name].masked_fill(t.to_matrix(mask) == 0, float("-inf"))
    return scores
