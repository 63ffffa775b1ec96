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
from collections.abc import Callable, Collection, Iterator, Sequence

import torch
from torch import nn

from sentinel.sparsity.targets import SparsityError, Target

logger = logging.getLogger(__name__)

METHODS = ("l1", "l2", "random", "gradient", "snip", "wanda", "sparsegpt")
DATA_METHODS = ("gradient", "snip", "wanda", "sparsegpt")
UPDATING_METHODS = ("sparsegpt",)     # change the kept weights too, so they have no score (see sparsegpt.py)
PER_MATRIX_METHODS = ("l1", "l2", "random", "wanda")   # one matrix's scores need only it (and its input norms)

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


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise SparsityError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    if method in UPDATING_METHODS:
        raise SparsityError(f"{method} prunes and updates weights together and has no scores; use sparsify().")


def _with_old_zeros(t: Target, scores: torch.Tensor, zeros_are_mask: bool = False) -> torch.Tensor:
    """Already-pruned weights score -inf: those under an installed mask, or (`zeros_are_mask`, a matrix recorded
    as sparse whose mask is not installed) its zeros."""
    mask = getattr(t.module, "weight_mask", None)
    if mask is not None:
        return scores.masked_fill(t.to_matrix(mask) == 0, float("-inf"))
    if zeros_are_mask:
        return scores.masked_fill(t.weight().detach() == 0, float("-inf"))
    return scores


def _matrix_scores(t: Target, method: str, norms: dict[str, torch.Tensor] | None,
                   generator: torch.Generator | None) -> torch.Tensor:
    """One target's scores for a PER_MATRIX_METHODS method, (out, in), float32."""
    w = t.weight().detach().float()     # the weight itself when it is fp32 already: never change it in place
    if method == "l1":
        return w.abs()
    if method == "l2":
        return w.pow(2)
    if method == "random":
        return torch.rand(w.shape, generator=generator).to(w.device)
    return w.abs().mul_(norms[t.name].to(w.device)[None, :])        # wanda: abs() is a new tensor


def iter_scores(model: nn.Module, targets: Sequence[Target], method: str, calibration: torch.Tensor | None = None,
                batch_size: int = 4, seed: int = 0, norms: dict[str, torch.Tensor] | None = None,
                zeros_are_mask: Collection[str] = ()) -> Iterator[tuple[Target, torch.Tensor]]:
    """(target, scores) one matrix at a time, in target order, for a PER_MATRIX_METHODS method: only one
    matrix's scores exist at once, so scoring costs one matrix of memory, not the model's size. The same
    values as `compute_scores` (random: the same seeded stream). `norms`: wanda's input norms, if computed."""
    _check_method(method)
    if method not in PER_MATRIX_METHODS:
        raise SparsityError(f"{method} scores need the whole model at once; use compute_scores().")
    if method == "wanda" and norms is None:
        norms = input_norms(model, targets, calibration, batch_size)
    generator = torch.Generator().manual_seed(seed) if method == "random" else None
    for t in targets:
        yield t, _with_old_zeros(t, _matrix_scores(t, method, norms, generator), t.name in zeros_are_mask)


def compute_scores(model: nn.Module, targets: Sequence[Target], method: str,
                   calibration: torch.Tensor | None = None, batch_size: int = 4, seed: int = 0,
                   loss_fn: LossFn = causal_lm_loss) -> dict[str, torch.Tensor]:
    """Scores per target, (out, in), float32; already-pruned weights score -inf (see module doc)."""
    _check_method(method)
    if method in PER_MATRIX_METHODS:
        return {t.name: s for t, s in iter_scores(model, targets, method, calibration, batch_size, seed)}
    weights = {t.name: t.weight().detach().float() for t in targets}
    if method in ("gradient", "snip"):
        grads = accumulated_gradients(model, targets, calibration, batch_size, loss_fn)
        if method == "gradient":
            scores = {n: grads[n].float().abs() for n in weights}
        else:
            scores = {n: (weights[n] * grads[n].float()).abs() for n in weights}
    return {t.name: _with_old_zeros(t, scores[t.name]) for t in targets}
