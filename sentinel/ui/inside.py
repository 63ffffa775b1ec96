"""Look inside one head: its token × token attention on a short text (BertViz-style) and the tokens it
attends to most, read from the real attention probabilities of one forward pass (eager attention)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from sentinel.errors import DataError
from sentinel.metrics.entropy import eager_attention
from sentinel.models.heads import model_heads

logger = logging.getLogger(__name__)

MAX_TOKENS = 32                 # a readable grid: 32 × 32 labelled cells


@dataclass
class HeadPattern:
    """One head's attention on a text: `weights[q][k]` (None when the head is removed) and its status."""

    layer: int
    head: int
    tokens: list[str]
    status: str                                    # "active", "masked" or "removed"
    weights: list[list[float]] | None = None
    top: list[tuple[str, float]] = field(default_factory=list)   # (token, mean attention it receives)

    def frame(self) -> pd.DataFrame:
        """Long table for the heat map: query and key positions, their labels, and the weight."""
        if self.weights is None:
            return pd.DataFrame(columns=["query", "key", "query_token", "key_token", "weight"])
        labels = [f"{i}: {t}" for i, t in enumerate(self.tokens)]
        rows = [{"query": q, "key": k, "query_token": labels[q], "key_token": labels[k], "weight": w}
                for q, row in enumerate(self.weights) for k, w in enumerate(row)]
        return pd.DataFrame(rows)


HeadKey = tuple[int, int]


def head_to_look_at(looking: HeadKey, followed: HeadKey | None, selected: tuple[HeadKey, ...]
                    ) -> tuple[HeadKey, HeadKey | None]:
    """The head 'Look inside a head' shows, and the selected head it last followed: a new first selected head is
    looked at; otherwise the head stays the one looked at (picked in the selector or followed before), also when the
    selection is cleared. One value for the selector and the charts, kept in the session, not in the widget (whose
    state Streamlit drops while the page is not shown)."""
    first = selected[0] if selected else None
    if first is not None and first != followed:
        return first, first
    return looking, first


def head_pattern(model: nn.Module, tokenizer: Any, text: str, layer: int, head: int,
                 max_tokens: int = MAX_TOKENS, top_k: int = 5) -> HeadPattern:
    """The attention of original head (`layer`, `head`) of `model` over the first `max_tokens` tokens of `text`."""
    heads = model_heads(model)
    if not (0 <= layer < heads.num_layers and 0 <= head < heads.num_heads):
        raise DataError(f"L{layer} H{head} is not a head of this model ({heads.num_layers} layers × "
                        f"{heads.num_heads} heads).")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    if len(ids) < 2:
        raise DataError("Type a sentence of at least two words to see where a head looks.")
    tokens = [tokenizer.decode([i]).replace("\n", "⏎") for i in ids]
    present = list(heads.present(layer))
    if head not in present:
        return HeadPattern(layer, head, tokens, "removed")
    status = "masked" if head in heads.masked(layer) else "active"
    local = present.index(head)
    captured: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise DataError(f"Layer {layer} returned no attention weights; load the model with "
                            "attn_implementation='eager' to look inside its heads.")
        captured["weights"] = weights[0, local].detach().float().cpu()       # [query, key]

    handle = heads.modules[layer].register_forward_hook(hook)
    body = getattr(model, "base_model", model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with eager_attention(model), torch.no_grad():
            input_ids = torch.tensor([ids], device=device)
            body(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    finally:
        handle.remove()
        model.train(was_training)
    weights = captured["weights"]
    received = weights.mean(dim=0)                                         # [key]: mean attention received
    order = torch.argsort(received, descending=True)[:top_k].tolist()
    top = [(f"{k}: {tokens[k]}", float(received[k])) for k in order]
    return HeadPattern(layer, head, tokens, status, weights.tolist(), top)
