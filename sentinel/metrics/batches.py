"""Batches for the metrics: whatever a caller passes becomes a list of {input_ids, attention_mask[, labels]}.

Also the language-model loss the data-driven metrics share: summed next-token NLL for causal
models, summed masked-token NLL for masked-LM models (which need `labels` in their batches).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sentinel.errors import DataError

Batch = dict[str, torch.Tensor]


def _as_batch(item: Any) -> Batch:
    if isinstance(item, Mapping):
        if "input_ids" not in item:
            raise DataError(f"A batch has keys {sorted(item)} but no 'input_ids'; give token ids per batch.")
        ids = torch.as_tensor(item["input_ids"])
        mask = item.get("attention_mask")
        labels = item.get("labels")
    elif isinstance(item, torch.Tensor):
        ids, mask, labels = item, None, None
    elif isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        ids = item[0]                              # (input_ids[, attention_mask]) as a TensorDataset yields
        mask = item[1] if len(item) > 1 else None
        labels = None
    else:
        raise DataError(f"Cannot read a batch of type {type(item).__name__}: give dicts with 'input_ids' "
                        "(and 'attention_mask'), [batch, pos] id tensors, or (input_ids, attention_mask) tuples.")
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
        raise DataError(f"input_ids must be integer token ids shaped [batch, pos], got {ids.dtype} "
                        f"{tuple(ids.shape)}.")
    batch: Batch = {"input_ids": ids.long()}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"]) if mask is None else torch.as_tensor(mask).long(
    ).reshape(batch["input_ids"].shape)
    if labels is not None:
        batch["labels"] = torch.as_tensor(labels).long().reshape(batch["input_ids"].shape)
    return batch


def prepare_batches(data: Any, num_batches: int | None = None, device: torch.device | None = None) -> list[Batch]:
    """The first `num_batches` batches of `data` (all when None) as dicts of tensors on `device`.

    `data` may be one batch (a dict or an id tensor) or an iterable of them, e.g. a DataLoader.
    """
    if num_batches is not None and num_batches < 1:
        raise DataError(f"num_batches must be at least 1, got {num_batches}.")
    items: Iterable[Any] = [data] if isinstance(data, (Mapping, torch.Tensor)) else data
    batches: list[Batch] = []
    for item in items:
        if num_batches is not None and len(batches) >= num_batches:
            break
        batch = _as_batch(item)
        batches.append({k: v.to(device) for k, v in batch.items()} if device is not None else batch)
    if not batches:
        raise DataError("No batches to analyse: the data is empty. Give at least one batch of token ids.")
    return batches


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def lm_loss_sum(model: nn.Module, batch: Batch, causal: bool) -> tuple[torch.Tensor, int]:
    """Summed token NLL of a batch (a scalar tensor that keeps its graph) and how many tokens it covers.

    Causal models: next-token prediction of every non-padded token after the first; labels default
    to input_ids. Masked-LM models: the batch's `labels` (-100 = not predicted), without shift.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = batch.get("labels")
    if labels is None:
        if not causal:
            raise DataError("Masked-LM models need 'labels' in each batch (ids of masked tokens, -100 elsewhere); "
                            "build them with sentinel.metrics.batches.masked_lm_batches.")
        labels = ids
    labels = labels.masked_fill(mask == 0, -100)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits      # [batch, pos, vocab]
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    count = int((labels != -100).sum())
    if count == 0:
        raise DataError("A batch has no token to predict (all padding, or one token per sequence); "
                        "give sequences of at least 2 tokens.")
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                           reduction="sum")
    return loss, count


def masked_lm_batches(batches: list[Batch], mask_token_id: int | None, ratio: float = 0.15,
                      seed: int = 0) -> list[Batch]:
    """Copies of `batches` with a seeded `ratio` of valid tokens replaced by the mask token and set as labels.

    Every chosen token is replaced (no 80/10/10 split), so the loss measures exactly the masked
    predictions; each batch gets at least one masked token.
    """
    if mask_token_id is None:
        raise DataError("This masked-LM tokenizer has no mask token, so no masked-LM loss can be computed; "
                        "use a tokenizer with a [MASK] token or skip the gradient and loss metrics.")
    generator = torch.Generator().manual_seed(seed)
    out: list[Batch] = []
    for batch in batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        draw = torch.rand(ids.shape, generator=generator).to(ids.device)          # [batch, pos]
        draw = draw.masked_fill(mask == 0, 2.0)
        chosen = draw < ratio
        if not bool(chosen.any()):
            chosen = draw == draw.min()
        labels = ids.masked_fill(~chosen, -100)
        out.append({**batch, "input_ids": ids.masked_fill(chosen, mask_token_id), "labels": labels})
    return out
