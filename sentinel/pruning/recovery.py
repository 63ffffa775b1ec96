"""Recovery without training: re-fit output projections after units are removed.

A layer's output projection (attention o_proj / c_proj / out_proj / dense / output.dense; the MLP's
down projection) reads the units' outputs side by side, so whatever units were removed, the layer's
output can be re-fitted from what is left. For each projection whose input width changed, on
calibration text, with X its input in the pruned model ([tokens, in]) and Y the unpruned model's
output of the same projection ([tokens, out]):

- `lstsq` (Kwon et al. 2022's layer-wise mask tuning, generalised): W, b = argmin ||X Wᵀ + b − Y||² +
  λ||W − W₀||², from XᵀX and XᵀY accumulated over batches, solved in float64. λ = ridge × mean diag(XᵀX).
- `bias` (FLAP): b ← b + mean(Y − Y_pruned), the removed units' mean contribution (plus any mean drift
  from layers pruned before). A projection without a bias gets one where the family's config can say so.

Layers are fitted in order (attention, then MLP, block by block), so each sees the earlier fixed ones.
Memory is one projection's statistics: activations are never kept.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.errors import SentinelError
from sentinel.metrics.batches import Batch, prepare_batches
from sentinel.models.blocks import in_features, mlp_output_projection
from sentinel.models.heads import ModelHeads, model_heads
from sentinel.models.positions import cap_to_positions

logger = logging.getLogger(__name__)

RECOVERY_METHODS = ("lstsq", "bias")
DEFAULT_CALIBRATION_TEXT = "bundled:train"

# Bias-free projections whose family config can switch biases on: {model_type: {part: (config flag,
# sibling projections that the flag also gives a bias, relative to the attention module / the block)}}.
# New biases are zero, so the model computes the same until recovery writes the output projection's bias.
BIAS_SWITCHES: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "llama": {"attention": ("attention_bias", ("q_proj", "k_proj", "v_proj", "o_proj")),
              "mlp": ("mlp_bias", ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))},
}


class RecoveryError(SentinelError):
    """Recovery cannot run on this model or with these inputs."""


@dataclass
class CalibrationConfig:
    """The text recovery fits on: `samples` sequences of `seq_len` tokens (default: the bundled train split)."""

    text: str | None = DEFAULT_CALIBRATION_TEXT
    samples: int = 128
    seq_len: int = 128
    batch_size: int = 8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProjectionFit:
    """One re-fitted projection and its relative error ||XWᵀ+b−Y||² / ||Y−mean Y||² on the calibration text."""

    layer: int
    part: str               # "attention" or "mlp"
    in_features: int        # pruned input width
    error_before: float
    error_after: float


@dataclass
class RecoveryResult:
    """What recovery did: method, calibration tokens, per-projection errors and wall time."""

    method: str
    tokens: int
    ridge: float
    seconds: float
    fits: list[ProjectionFit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_batches(model: nn.Module, tokenizer: Any, config: CalibrationConfig | None = None) -> list[Batch]:
    """Token batches of the calibration text on the model's device."""
    from sentinel.data import load_text_blocks

    config = config or CalibrationConfig()
    for name in ("samples", "seq_len", "batch_size"):
        if getattr(config, name) < 1:
            raise RecoveryError(f"Calibration {name} must be at least 1, got {getattr(config, name)}.")
    seq_len = cap_to_positions(model, config.seq_len)
    blocks = load_text_blocks(tokenizer, config.text, block_size=seq_len, max_tokens=config.samples * seq_len)
    device = next(model.parameters()).device
    return prepare_batches(blocks.dataloader(batch_size=config.batch_size), device=device)


def recover(
    model: nn.Module,
    reference: nn.Module,
    batches: list[Batch],
    method: str = "lstsq",
    ridge: float = 1e-3,
    progress: Callable[[int, int], None] | None = None,
) -> RecoveryResult:
    """Re-fit, in place, every output projection of `model` whose input width differs from `reference`'s.

    `reference` is the unpruned model (same family and blocks); `batches` the calibration text.
    """
    if method not in RECOVERY_METHODS:
        raise RecoveryError(f"Unknown recovery method {method!r}; use one of {', '.join(RECOVERY_METHODS)} (or none).")
    if ridge < 0:
        raise RecoveryError(f"ridge must be 0 or more, got {ridge}.")
    start = time.perf_counter()
    pairs = _changed_projections(model, reference)
    result = RecoveryResult(method, _token_count(batches), ridge, 0.0)
    if method == "bias":
        for layer, part, proj, _ in pairs:
            if proj.bias is None and (note := _add_bias(model, layer, part)) not in result.notes:
                result.notes.append(note)
        pairs = _changed_projections(model, reference)   # bias creation replaced modules' parameters
    was_training = model.training, reference.training
    model.eval()
    reference.eval()
    try:
        with torch.no_grad():
            for done, (layer, part, proj, ref_proj) in enumerate(pairs):
                stats = _accumulate(model, reference, proj, ref_proj, batches)
                result.fits.append(_fit(proj, stats, method, ridge, layer, part))
                if progress is not None:
                    progress(done + 1, len(pairs))
    finally:
        model.train(was_training[0])
        reference.train(was_training[1])
    result.seconds = time.perf_counter() - start
    logger.info("Recovery (%s) re-fitted %d projections on %d tokens in %.2fs", method, len(result.fits),
                result.tokens, result.seconds)
    return result


def _changed_projections(model: nn.Module, reference: nn.Module) -> list[tuple[int, str, nn.Module, nn.Module]]:
    """(layer, part, projection, reference projection) for every output projection whose input was cut, in order."""
    heads, ref_heads = model_heads(model), model_heads(reference)
    if heads.adapter.family != ref_heads.adapter.family:
        raise RecoveryError("The reference is not the same model family as the pruned model; pass the unpruned "
                            "model the pruned one was made from.")
    # Blocks are paired by their original layer number, so whole blocks may be gone from the pruned model
    # (its later blocks are still fitted towards the reference's output of the same original block).
    missing = [layer for layer in heads.present_blocks() if not ref_heads.block_present(layer)]
    if heads.num_layers != ref_heads.num_layers or missing:
        raise RecoveryError("The reference lacks blocks the pruned model has"
                            + (f" ({', '.join(map(str, missing))})" if missing else "")
                            + "; pass the unpruned model the pruned one was made from.")
    pairs = []
    for layer in heads.present_blocks():
        block, ref_block = heads.block(layer), ref_heads.block(layer)
        for part, proj, ref_proj in (
            ("attention", heads.adapter.output_projection(heads.modules[layer]),
             ref_heads.adapter.output_projection(ref_heads.modules[layer])),
            ("mlp", mlp_output_projection(heads, block), mlp_output_projection(ref_heads, ref_block)),
        ):
            if in_features(proj) == 0:
                logger.warning("Layer %d %s has no units left; its output is its bias, nothing to re-fit.", layer, part)
            elif in_features(proj) != in_features(ref_proj):
                pairs.append((layer, part, proj, ref_proj))
    return pairs


class _Stop(Exception):
    """Raised by a capture hook once the projection of interest has run, to skip the rest of the forward."""


def _run_until(model: nn.Module, module: nn.Module, batch: Batch, capture: Callable[[tuple, Any], None]) -> None:
    """Run `model` on `batch` until `module` has produced its output; `capture(inputs, output)` sees it."""
    def hook(_: nn.Module, args: tuple, output: Any) -> None:
        capture(args, output)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    except _Stop:
        return
    finally:
        handle.remove()
    raise RecoveryError("The projection to re-fit never ran in the forward pass; is it part of this model?")


@dataclass
class _Stats:
    xtx: torch.Tensor        # [in (+1), in (+1)] float64; the last row/column is the bias's constant input
    xty: torch.Tensor        # [in (+1), out]
    yty: torch.Tensor        # [out] per-channel sum of Y²
    y_sum: torch.Tensor      # [out]
    diff_sum: torch.Tensor   # [out] sum of Y − Y_pruned
    tokens: int


def _accumulate(model: nn.Module, reference: nn.Module, proj: nn.Module, ref_proj: nn.Module,
                batches: list[Batch]) -> _Stats:
    """One pass over the calibration batches: XᵀX, XᵀY and sums for one projection, in float64."""
    width = in_features(proj) + (1 if proj.bias is not None else 0)
    out = ref_proj.weight.shape[1] if isinstance(ref_proj, Conv1D) else ref_proj.weight.shape[0]
    device = proj.weight.device
    stats = _Stats(*(torch.zeros(shape, dtype=torch.float64, device=device)
                     for shape in ((width, width), (width, out), (out,), (out,), (out,))), tokens=0)
    captured: dict[str, torch.Tensor] = {}
    for batch in batches:
        keep = batch["attention_mask"].reshape(-1).bool()   # padding never counts
        _run_until(reference, ref_proj, batch, lambda args, output: captured.__setitem__("y", output))
        _run_until(model, proj, batch, lambda args, output: captured.update(x=args[0], y_pruned=output))
        x = captured["x"].reshape(-1, captured["x"].shape[-1])[keep].double()         # [tokens, in]
        y = captured["y"].reshape(-1, out)[keep].double()                               # [tokens, out]
        y_pruned = captured["y_pruned"].reshape(-1, out)[keep].double()
        if proj.bias is not None:
            x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)
        stats.xtx += x.T @ x
        stats.xty += x.T @ y
        stats.yty += (y * y).sum(0)
        stats.y_sum += y.sum(0)
        stats.diff_sum += (y - y_pruned).sum(0)
        stats.tokens += x.shape[0]
    if stats.tokens == 0:
        raise RecoveryError("The calibration batches hold no tokens (all padding); give some text.")
    return stats


def _weight_of(proj: nn.Module) -> torch.Tensor:
    """[out, in (+1)] float64: the projection's weight in Linear orientation, with its bias as the last column."""
    weight = proj.weight.detach().double()
    weight = weight.T if isinstance(proj, Conv1D) else weight
    if proj.bias is not None:
        weight = torch.cat([weight, proj.bias.detach().double()[:, None]], dim=1)
    return weight


def _relative_error(weight: torch.Tensor, stats: _Stats) -> float:
    """||X Wᵀ − Y||² / ||Y − mean Y||² from the accumulated statistics (no activations needed)."""
    residual = (torch.einsum("oi,ij,oj->", weight, stats.xtx, weight) - 2 * torch.einsum("oi,io->", weight, stats.xty)
                + stats.yty.sum())
    spread = stats.yty.sum() - (stats.y_sum ** 2).sum() / stats.tokens
    return float(residual.clamp_min(0) / spread.clamp_min(1e-30))


def _fit(proj: nn.Module, stats: _Stats, method: str, ridge: float, layer: int, part: str) -> ProjectionFit:
    """Solve for the new weights (lstsq) or bias (bias) and write them into the projection."""
    before = _weight_of(proj)
    if method == "lstsq":
        size = in_features(proj)
        lam = ridge * float(stats.xtx.diagonal()[:size].mean())
        eye = torch.eye(stats.xtx.shape[0], dtype=torch.float64, device=stats.xtx.device) * lam
        try:
            after = torch.linalg.solve(stats.xtx + eye, stats.xty + eye @ before.T).T  # [out, in (+1)]
        except torch.linalg.LinAlgError:
            raise RecoveryError(f"Layer {layer} {part}: the calibration statistics are singular (too few tokens "
                                "for the width, or ridge=0); use more calibration text or a positive ridge.") from None
    else:
        after = before.clone()
        after[:, -1] += stats.diff_sum / stats.tokens
    fit = ProjectionFit(layer, part, in_features(proj), _relative_error(before, stats), _relative_error(after, stats))
    _write(proj, after)
    return fit


def _write(proj: nn.Module, weight: torch.Tensor) -> None:
    """Copy a [out, in (+1)] float64 solution back into the projection, in its own orientation and dtype."""
    if proj.bias is not None:
        proj.bias.data.copy_(weight[:, -1].to(proj.bias.dtype))
        weight = weight[:, :-1]
    proj.weight.data.copy_((weight.T if isinstance(proj, Conv1D) else weight).to(proj.weight.dtype))


def _add_bias(model: nn.Module, layer: int, part: str) -> str:
    """Give a bias-free output projection a (zero) bias where the family config can express it, else explain."""
    return enable_output_biases(model, part)


def bias_parts_enabled(model: nn.Module) -> list[str]:
    """The parts ("attention", "mlp") whose biases `recover(method="bias")` switched on through the config."""
    switches = BIAS_SWITCHES.get(getattr(model.config, "model_type", "?"), {})
    return [part for part, (flag, _) in switches.items() if getattr(model.config, flag, False)]


def enable_output_biases(model: nn.Module, part: str) -> str:
    """Switch on the family's config flag for `part` and give its projections zero biases (as bias recovery does),
    so a state dict saved after bias recovery loads into a freshly pruned copy; returns a note saying what changed."""
    heads: ModelHeads = model_heads(model)
    model_type = getattr(model.config, "model_type", "?")
    switch = BIAS_SWITCHES.get(model_type, {}).get(part)
    if switch is None:
        raise RecoveryError(
            f"recover='bias' needs a bias on the {part} output projection, and {model_type} has none: its modeling "
            "code builds that projection without a bias, so a bias could not be saved or exported. Use "
            "recover='lstsq' instead.")
    flag, paths = switch
    if not getattr(model.config, flag, False):
        setattr(model.config, flag, True)
        for layer in heads.present_blocks():     # original layer numbers: removed blocks are skipped
            block = heads.block(layer)
            owner = heads.modules[layer] if part == "attention" else block
            for path in paths:
                module = owner.get_submodule(path)
                if module.bias is None:
                    module.bias = nn.Parameter(module.weight.new_zeros(module.weight.shape[0]),
                                               requires_grad=module.weight.requires_grad)
        logger.warning("recover='bias': set config.%s=True and gave the %s projections zero biases.", flag, part)
    return f"set config.{flag}=True (zero biases on {', '.join(paths)}) so the {part} output projection has a bias"


def _token_count(batches: list[Batch]) -> int:
    return int(sum(int(b["attention_mask"].sum()) for b in batches))


def prune_and_recover(
    model: nn.Module,
    tokenizer: Any,
    prune: Callable[[nn.Module], Any],
    method: str | None = "lstsq",
    calibration: CalibrationConfig | None = None,
    ridge: float = 1e-3,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, RecoveryResult | None]:
    """Run `prune(model)` (e.g. `lambda m: remove_heads(m, plan)`), then recover with `method` (None: don't).

    The unpruned reference is a copy taken just before pruning, so memory holds the model twice meanwhile.
    `progress(done, total)` is called after each re-fitted projection (a caller may raise from it to stop).
    Returns what `prune` returned and the RecoveryResult.
    """
    if method is None:
        return prune(model), None
    if method not in RECOVERY_METHODS:
        raise RecoveryError(f"Unknown recovery method {method!r}; use one of {', '.join(RECOVERY_METHODS)} (or none).")
    batches = calibration_batches(model, tokenizer, calibration)
    reference = copy.deepcopy(model)
    done = prune(model)
    return done, recover(model, reference, batches, method=method, ridge=ridge, progress=progress)
