"""Gradient importance: finite differences by hand, zero for a dead head, accumulation and normalisation."""

from __future__ import annotations

import pytest
import torch

from sentinel import mask_heads
from sentinel.errors import DataError
from sentinel.metrics.gradient import gradient_importance
from sentinel.models.heads import model_heads
from tests.conftest import make_tiny_model, sample_ids

D = 8


def summed_loss(model, ids) -> float:
    """Sum of next-token NLL over the batch in float64: -log softmax(logits)[next token], added up."""
    with torch.no_grad():
        logp = model(input_ids=ids).logits.double().log_softmax(-1)      # [batch, pos, vocab]
    return -float(logp[:, :-1].gather(-1, ids[:, 1:, None]).sum())


def test_matches_central_finite_difference_of_the_head_output():
    model = make_tiny_model("gpt2").double()
    ids = sample_ids()
    got = gradient_importance(model, ids).values
    tokens = ids.shape[0] * (ids.shape[1] - 1)
    eps = 1e-4
    for layer, head in [(0, 1), (1, 3), (2, 0)]:
        # the gate scales the head's input rows of c_proj (Conv1D [in, out]); scale those rows by 1 +- eps
        rows = model.transformer.h[layer].attn.c_proj.weight[head * D:(head + 1) * D]
        original = rows.detach().clone()
        with torch.no_grad():
            rows.copy_(original * (1 + eps))
        up = summed_loss(model, ids)
        with torch.no_grad():
            rows.copy_(original * (1 - eps))
        down = summed_loss(model, ids)
        with torch.no_grad():
            rows.copy_(original)
        want = abs(up - down) / (2 * eps) / tokens
        assert got[layer, head].item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_zero_output_projection_slice_gives_exactly_zero(name):
    model = make_tiny_model(name)
    with torch.no_grad():
        model_heads(model).head_weights(1, 2).o.zero_()
    values = gradient_importance(model, sample_ids()).values
    assert values[1, 2].item() == 0.0
    assert bool((values.flatten()[torch.arange(values.numel()) != values.shape[1] + 2] > 0).all())


def test_accumulates_over_batches_weighted_by_tokens():
    model = make_tiny_model("gpt2")
    a, b = sample_ids(length=12, seed=1), sample_ids(batch=1, length=6, seed=2)
    ta, tb = 2 * 11, 1 * 5
    both = gradient_importance(model, [a, b]).values
    want = (gradient_importance(model, a).values * ta + gradient_importance(model, b).values * tb) / (ta + tb)
    assert torch.allclose(both, want, rtol=1e-6)
    assert gradient_importance(model, [a, b], num_batches=1).meta["tokens"] == ta


def test_per_layer_l2_normalisation_and_masked_heads():
    model = make_tiny_model("gpt2")
    mask_heads(model, {0: [3]})
    raw = gradient_importance(model, sample_ids()).values
    scaled = gradient_importance(model, sample_ids(), normalize_layers=True).values
    assert torch.isnan(raw[0, 3]) and torch.isnan(scaled[0, 3])
    for layer in range(3):
        live = ~torch.isnan(scaled[layer])
        assert scaled[layer][live].norm().item() == pytest.approx(1.0)
        assert torch.allclose(scaled[layer][live], raw[layer][live] / raw[layer][live].norm())


def test_leaves_parameters_and_gates_as_they_were():
    model = make_tiny_model("gpt2")
    ids = sample_ids()
    with torch.no_grad():
        before = model(ids).logits
    gradient_importance(model, ids)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


def test_masked_lm_needs_labels():
    with pytest.raises(DataError, match="labels"):
        gradient_importance(make_tiny_model("bert"), sample_ids())
