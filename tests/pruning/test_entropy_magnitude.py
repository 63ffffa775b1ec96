"""The documented functional API: import path, entropy values, and pruning that really switches heads off."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sentinel import active_heads
from sentinel.errors import SentinelError
from sentinel.metrics import attention_entropy, weight_magnitude
from sentinel.pruning.entropy_magnitude import (
    collect_attention_distributions, compute_attention_entropy, entropy_based_pruning, magnitude_based_pruning,
)
from tests.conftest import make_tiny_model, sample_ids
from tests.metrics.util import sharpen_attention


def loader(batches: int = 3) -> DataLoader:
    ids = sample_ids(batch=2 * batches, length=10)
    return DataLoader(TensorDataset(ids), batch_size=2)          # yields [ids] lists, as TensorDataset does


def test_collect_and_compute_entropy():
    model = sharpen_attention(make_tiny_model("gpt2"))
    stats = collect_attention_distributions(model, loader(4), num_batches=2)
    assert stats.batches == 2 and stats.tokens == 2 * 2 * 10
    raw = compute_attention_entropy(stats)
    first_two = [sample_ids(batch=8, length=10)[:2], sample_ids(batch=8, length=10)[2:4]]
    assert torch.allclose(raw, attention_entropy(model, first_two)[0].values)
    normalized = compute_attention_entropy(stats, normalized=True)
    assert raw.shape == normalized.shape == (3, 4) and bool(((normalized >= 0) & (normalized <= 1)).all())


def test_compute_entropy_of_a_probability_map():
    probs = torch.full((1, 2, 5, 5), 0.2)
    assert torch.allclose(compute_attention_entropy(probs), torch.full((2,), math.log(5), dtype=torch.float64))
    with pytest.raises(SentinelError, match="collect_attention_distributions"):
        compute_attention_entropy([0.2, 0.8])


def test_entropy_based_pruning_masks_the_highest_entropy_heads():
    model = sharpen_attention(make_tiny_model("gpt2"))
    ids = sample_ids()
    with torch.no_grad():
        before = model(ids).logits
    stats = collect_attention_distributions(model, loader())
    entropy = compute_attention_entropy(stats)
    pruned = entropy_based_pruning(model, stats, prune_ratio=0.3)     # round(3.6) = 4 of 12
    assert len(pruned) == 4
    top4 = sorted(divmod(i, 4) for i in entropy.flatten().argsort(descending=True)[:4].tolist())
    assert pruned == top4
    live = active_heads(model)
    assert all(head not in live[layer] for layer, head in pruned)
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, before)


def test_magnitude_based_pruning_masks_the_lowest_magnitude_heads():
    model = make_tiny_model("llama")                               # GQA: masking single heads is allowed
    magnitude = weight_magnitude(model).values
    pruned = magnitude_based_pruning(model, prune_ratio=0.25)      # 6 of 24
    lowest = sorted(divmod(i, 8) for i in magnitude.flatten().argsort()[:6].tolist())
    assert pruned == lowest
    assert sum(len(v) for v in active_heads(model).values()) == 18
    again = magnitude_based_pruning(model, prune_ratio=0.25)       # ratio of the 18 still active: round(4.5) = 4
    assert len(again) == 4 and not set(again) & set(pruned)
