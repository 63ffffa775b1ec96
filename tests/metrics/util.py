"""Helpers the metric tests share: give tiny random models attention that differs from head to head."""

from __future__ import annotations

import torch
from torch import nn

from sentinel.models.heads import model_heads


def sharpen_attention(model: nn.Module) -> nn.Module:
    """Scale each head's query weights by a head-specific factor, so entropies differ across heads."""
    heads = model_heads(model)
    with torch.no_grad():
        for layer in range(heads.num_layers):
            for head in heads.present(layer):
                heads.head_weights(layer, head).q.mul_(30.0 + 150.0 * head + 20.0 * layer)
    return model


def reference_entropy(attentions: tuple[torch.Tensor, ...], attention_mask: torch.Tensor,
                      causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """([layers, heads] mean entropy, mean normalised entropy) from full output_attentions maps, query by query."""
    layers, heads = len(attentions), attentions[0].shape[1]
    raw = torch.zeros(layers, heads, dtype=torch.float64)
    norm = torch.zeros(layers, heads, dtype=torch.float64)
    for layer, probs in enumerate(attentions):
        for head in range(heads):
            values, normalized = [], []
            for b in range(probs.shape[0]):
                valid = attention_mask[b].bool()
                for t in range(probs.shape[2]):
                    if not valid[t]:
                        continue
                    p = probs[b, head, t].double()
                    h = float(-(p[p > 0] * p[p > 0].log()).sum())
                    values.append(h)
                    keys = int(valid[: t + 1].sum()) if causal else int(valid.sum())
                    if keys > 1:
                        normalized.append(h / torch.log(torch.tensor(float(keys))).item())
            raw[layer, head] = sum(values) / len(values)
            norm[layer, head] = sum(normalized) / len(normalized)
    return raw, norm
