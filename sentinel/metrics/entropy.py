"""Attention entropy per head, from the real attention probabilities, one layer's map alive at a time.

For each valid (non-padded) query, H = -sum_k p_k log p_k over the keys (nats). Padded keys carry
zero probability already (the model's mask sends their scores to -inf before the softmax) and
0 log 0 counts as 0; padded queries are left out of the average. Heads are averaged over all valid
queries of all batches pooled together (a token-weighted mean).

Normalised entropy divides each query's entropy by log(n), n the keys that query can see: t + 1
valid keys at position t for a causal model (capped by a sliding window where the config has one),
all valid keys for a bidirectional one. A query that sees one key (position 0 of a causal model)
has entropy 0 out of a possible 0, which is undefined, so it is left out of the normalised
average only. Normalised values lie in [0, 1] and compare across layers and lengths.

A forward hook on every attention module reduces that layer's probabilities [batch, heads, q, k]
to per-head sums and lets the tensor go, so memory stays one layer's map. Attention weights only
exist on the eager path, so the model is switched to eager for the analysis and switched back after.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sentinel.errors import SentinelError, UnsupportedModelError
from sentinel.metrics.batches import model_device, prepare_batches
from sentinel.metrics.scores import HeadScores, active_grid
from sentinel.models.heads import ModelHeads, model_heads

logger = logging.getLogger(__name__)


@dataclass
class AttentionStats:
    """Per-head sums of query entropies collected over batches; divide to get the averages."""

    entropy_sum: torch.Tensor        # [layers, heads] sum of H over valid queries (nats)
    query_count: torch.Tensor        # [layers, heads] valid queries summed
    normalized_sum: torch.Tensor     # [layers, heads] sum of H / log(visible keys) over queries seeing > 1 key
    normalized_count: torch.Tensor   # [layers, heads] queries in normalized_sum
    active: torch.Tensor             # [layers, heads] bool, heads present and unmasked during collection
    batches: int = 0
    tokens: int = 0

    @classmethod
    def empty(cls, active: torch.Tensor) -> AttentionStats:
        zeros = torch.zeros(active.shape, dtype=torch.float64)
        return cls(zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone(), active.clone())

    def _mean(self, total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        mean = total / count.clamp(min=1)
        return mean.masked_fill(~self.active | (count == 0), math.nan)

    def entropy(self) -> HeadScores:
        """Mean entropy in nats per head; NaN for pruned heads."""
        return HeadScores("entropy", self._mean(self.entropy_sum, self.query_count), self._meta())

    def entropy_normalized(self) -> HeadScores:
        """Mean entropy / log(visible keys) per head, in [0, 1]; NaN for pruned heads."""
        return HeadScores("entropy_normalized", self._mean(self.normalized_sum, self.normalized_count), self._meta())

    def _meta(self) -> dict[str, Any]:
        return {"batches": self.batches, "tokens": self.tokens}


def visible_key_counts(attention_mask: torch.Tensor, causal: bool, window: int | None = None) -> torch.Tensor:
    """[batch, pos] number of valid keys each query can see, from a [batch, pos] 0/1 padding mask."""
    mask = attention_mask.long()
    if not causal:
        return mask.sum(dim=1, keepdim=True).expand_as(mask)
    seen = mask.cumsum(dim=1)                                   # valid keys at positions <= t
    if window is not None and window < mask.shape[1]:
        before = torch.nn.functional.pad(seen, (window, 0))[:, : mask.shape[1]]  # valid keys at positions <= t - window
        seen = seen - before
    return seen


def entropy_sums(probs: torch.Tensor, query_mask: torch.Tensor,
                 visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head (entropy sum, query count, normalised sum, normalised count) of one attention map.

    probs [batch, heads, q, k]; query_mask [batch, q] bool (valid queries); visible [batch, q] keys
    each query sees. Works head by head so the temporary is 1/heads of the map.
    """
    heads = probs.shape[1]
    norm_ok = query_mask & (visible > 1)                        # [batch, q]
    log_visible = visible.clamp(min=2).double().log()[norm_ok]  # [n_norm]
    ent_sum = torch.zeros(heads, dtype=torch.float64)
    norm_sum = torch.zeros(heads, dtype=torch.float64)
    for i in range(heads):
        p = probs[:, i].float()                                 # [batch, q, k]
        ent = -torch.special.xlogy(p, p).sum(dim=-1)            # [batch, q]
        ent_sum[i] = ent[query_mask].double().sum().cpu()
        norm_sum[i] = (ent[norm_ok].double() / log_visible).sum().cpu()
    n_queries = float(query_mask.sum())
    n_norm = float(norm_ok.sum())
    return ent_sum, torch.full((heads,), n_queries), norm_sum, torch.full((heads,), n_norm)


def attention_window(config: Any, layer: int) -> int | None:
    """The sliding-window size of `layer` when the config gives one, else None (full attention)."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or isinstance(window, bool):
        return None
    types = getattr(config, "layer_types", None)
    if types is not None and types[layer] != "sliding_attention":
        return None
    return window


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the block with eager attention (which materialises weights), restoring the previous implementation."""
    config = model.config
    previous = getattr(config, "_attn_implementation", None)
    if previous == "eager":
        yield
        return
    if not hasattr(model, "set_attn_implementation"):
        raise UnsupportedModelError(f"{type(model).__name__} cannot switch to eager attention; load it with "
                                    "attn_implementation='eager' to analyse attention.")
    model.set_attn_implementation("eager")
    try:
        if config._attn_implementation != "eager":
            raise UnsupportedModelError(f"{type(model).__name__} refused to switch from {previous!r} to eager "
                                        "attention; load it with attn_implementation='eager' to analyse attention.")
        logger.info("Switched attention from %s to eager for the analysis.", previous)
        yield
    finally:
        model.set_attn_implementation(previous)


def _layer_hook(heads: ModelHeads, layer: int, stats: AttentionStats, current: dict[str, torch.Tensor]):
    present = list(heads.present(layer))
    index = torch.tensor(present, dtype=torch.long)
    window = attention_window(heads.model.config, layer)

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        if not present:
            return
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise SentinelError(f"Layer {layer} returned no attention weights even with eager attention; "
                                "load the model with attn_implementation='eager'.")
        if weights.shape[1] != len(present):                    # [batch, present heads, q, k]
            raise SentinelError(f"Layer {layer} returned weights for {weights.shape[1]} heads but has "
                                f"{len(present)} present; the model was changed outside Sentinel.")
        visible = visible_key_counts(current["attention_mask"], heads.adapter.is_causal(heads.model.config), window)
        ent, n, norm, n_norm = entropy_sums(weights.detach(), current["attention_mask"].bool(), visible)
        stats.entropy_sum[layer, index] += ent
        stats.query_count[layer, index] += n
        stats.normalized_sum[layer, index] += norm
        stats.normalized_count[layer, index] += n_norm

    return hook


def collect_attention_stats(model: nn.Module, data: Any, num_batches: int | None = None) -> AttentionStats:
    """Run the model over `data` and return per-head entropy sums for every original head.

    `data`: a batch or an iterable of batches (see `prepare_batches`); at most `num_batches` are used.
    Only the transformer body runs (`model.base_model`): the attention maps do not need the LM head.
    """
    heads = model_heads(model)
    batches = prepare_batches(data, num_batches, model_device(model))
    stats = AttentionStats.empty(active_grid(model))
    current: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(_layer_hook(heads, layer, stats, current))
               for layer, module in enumerate(heads.modules) if module is not None]   # None: block removed
    body = getattr(model, "base_model", model)                  # the transformer without its LM head: no logits needed
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model), torch.no_grad():
            for batch in batches:
                current["attention_mask"] = batch["attention_mask"]
                body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
                stats.batches += 1
                stats.tokens += int(batch["attention_mask"].sum())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return stats


def attention_entropy(model: nn.Module, data: Any, num_batches: int | None = None) -> tuple[HeadScores, HeadScores]:
    """(entropy in nats, normalised entropy) per original head over `data`; NaN for pruned heads."""
    stats = collect_attention_stats(model, data, num_batches)
    return stats.entropy(), stats.entropy_normalized()


def map_entropy(probs: torch.Tensor, attention_mask: torch.Tensor | None = None, causal: bool = False,
                normalized: bool = False) -> torch.Tensor:
    """[heads] mean (normalised) entropy of one attention map [batch, heads, q, k] or [heads, q, k].

    `attention_mask` [batch, q] marks valid tokens (default all); `causal` decides the visible keys
    used for normalisation (t + 1 at position t, else all valid keys).
    """
    if probs.dim() == 3:
        probs = probs[None]
    if probs.dim() != 4:
        raise SentinelError(f"Attention probabilities must be [batch, heads, q, k], got {tuple(probs.shape)}.")
    batch, _, queries, keys = probs.shape
    if attention_mask is None:
        if queries != keys:
            raise SentinelError("Without an attention_mask the map must be square (q == k); pass the mask.")
        attention_mask = torch.ones(batch, queries, dtype=torch.long, device=probs.device)
    visible = visible_key_counts(attention_mask, causal)
    ent, n, norm, n_norm = entropy_sums(probs, attention_mask.bool(), visible)
    total, count = (norm, n_norm) if normalized else (ent, n)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))
