"""Loss impact: each head's value is the loss difference measured by hand; the model comes back unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from sentinel import mask_heads, unmask_heads
from sentinel.metrics.loss_impact import loss_impact
from sentinel.pruning.masks import masked_heads, pruning_history
from tests.conftest import make_tiny_model, sample_ids


def mean_loss(model, ids) -> float:
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)      # transformers' own mean next-token loss


def test_equals_loss_difference_measured_by_hand():
    model = make_tiny_model("gpt2")
    ids = sample_ids()
    got = loss_impact(model, ids).values
    base = mean_loss(model, ids)
    for layer, head in [(0, 0), (1, 2), (2, 3)]:
        mask_heads(model, {layer: [head]})
        want = mean_loss(model, ids) - base
        unmask_heads(model)
        assert got[layer, head].item() == pytest.approx(want, abs=1e-6)


def test_progress_and_restoration():
    model = make_tiny_model("llama")
    ids = sample_ids()
    mask_heads(model, {1: [5]})
    history = list(pruning_history(model))
    with torch.no_grad():
        before = model(ids).logits
    calls = []
    values = loss_impact(model, ids, progress=lambda done, total: calls.append((done, total))).values
    assert calls == [(i, 23) for i in range(1, 24)]                # 3 x 8 heads, one already masked
    assert math.isnan(values[1, 5].item()) and int(torch.isnan(values).sum()) == 1
    assert masked_heads(model) == {1: [5]}
    assert pruning_history(model) == history
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


def test_stopping_from_the_callback_restores_the_model():
    model = make_tiny_model("gpt2")
    ids = sample_ids()

    def stop(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loss_impact(model, ids, progress=stop)
    assert masked_heads(model) == {} and pruning_history(model) == []
