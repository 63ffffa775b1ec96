"""Neuron and layer metrics, checked against hand computations on tiny models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sentinel import mask_layers, mask_neurons, remove_neurons
from sentinel.metrics import compute_scores
from sentinel.metrics.batches import lm_loss_sum
from sentinel.metrics.loss_impact import mean_loss
from sentinel.metrics.scores import UnitScores
from tests.conftest import make_tiny_model, sample_ids


def test_neuron_magnitude_by_hand_on_conv1d():
    model = make_tiny_model("gpt2")
    mlp = model.transformer.h[0].mlp
    with torch.no_grad():
        mlp.c_fc.weight.zero_()                 # Conv1D [in=32, out=128]
        mlp.c_proj.weight.zero_()               # Conv1D [in=128, out=32]
        mlp.c_fc.weight[:, 1] = 2.0             # neuron 1's input weights
        mlp.c_proj.weight[1, :] = 0.5           # neuron 1's output weights
    scores = compute_scores(model, ["magnitude"], kind="neuron")["magnitude"]
    assert scores.kind == "neuron" and scores.values.shape == (3, 128)
    assert scores.values[0, 1].item() == pytest.approx(2.5 * math.sqrt(32))
    assert scores.values[0, 0].item() == 0.0


def test_neuron_magnitude_counts_gate_up_and_down_for_llama():
    model = make_tiny_model("llama")
    mlp = model.model.layers[1].mlp
    with torch.no_grad():
        expected = float(mlp.gate_proj.weight[7].norm() + mlp.up_proj.weight[7].norm() + mlp.down_proj.weight[:, 7].norm())
    got = compute_scores(model, ["magnitude"], kind="neuron")["magnitude"].values[1, 7].item()
    assert got == pytest.approx(expected, rel=1e-6)


def _mlp_io(model, ids):
    """(input of c_fc, input of c_proj) of GPT-2 layer 0 for `ids`, captured independently."""
    mlp = model.transformer.h[0].mlp
    seen = {}
    h1 = mlp.c_fc.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach()))
    h2 = mlp.c_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("a", a[0].detach()))
    with torch.no_grad():
        model(ids)
    h1.remove()
    h2.remove()
    return seen["x"].reshape(-1, 32).double(), seen["a"].reshape(-1, 128).double()


def test_neuron_activation_and_wanda_by_hand():
    model = make_tiny_model("gpt2")
    ids = sample_ids()
    x, a = _mlp_io(model, ids)                                           # [tokens, 32], [tokens, 128]
    scores = compute_scores(model, ["activation", "wanda"], ids, kind="neuron")
    assert torch.allclose(scores["activation"].values[0], a.abs().mean(dim=0), rtol=1e-6)
    w_in = model.transformer.h[0].mlp.c_fc.weight.detach().double()       # [32, 128]
    w_out = model.transformer.h[0].mlp.c_proj.weight.detach().double()    # [128, 32]
    expected = (w_in.abs() * x.norm(dim=0)[:, None]).sum(dim=0) + w_out.abs().sum(dim=1) * a.norm(dim=0)
    assert torch.allclose(scores["wanda"].values[0], expected, rtol=1e-6)


def test_pruned_neurons_have_no_score_and_gradient_is_zero_for_a_dead_neuron():
    model = make_tiny_model("gpt2")
    mask_neurons(model, {0: [2]})
    remove_neurons(model, {1: [5]})
    with torch.no_grad():
        model.transformer.h[2].mlp.c_proj.weight[9].zero_()             # neuron 9 of layer 2 reaches nothing
    ids = sample_ids()
    scores = compute_scores(model, ["magnitude", "gradient", "random", "wanda"], ids, kind="neuron")
    for s in scores.values():
        assert math.isnan(s.values[0, 2]) and math.isnan(s.values[1, 5])
        assert int(torch.isnan(s.values).sum()) == 2
    assert scores["gradient"].values[2, 9].item() == 0.0
    assert scores["gradient"].values[2, 8].item() > 0.0


def test_block_influence_by_hand():
    model = make_tiny_model("llama")
    ids = sample_ids()
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    scores = compute_scores(model, ["block_influence"], ids, kind="layer")["block_influence"]
    expected = (1 - F.cosine_similarity(hs[0].double(), hs[1].double(), dim=-1)).mean()
    assert scores.values[0, 0].item() == pytest.approx(float(expected), rel=1e-6)
    mask_layers(model, [1], part="mlp")
    again = compute_scores(model, ["block_influence"], ids, kind="layer")["block_influence"]
    assert math.isnan(again.values[1, 2]) and not math.isnan(again.values[1, 0])


def test_layer_gradient_matches_a_hand_made_gate():
    model = make_tiny_model("gpt2")
    ids = sample_ids(batch=1)
    gate = torch.ones((), requires_grad=True)
    handle = model.transformer.h[1].mlp.c_proj.register_forward_hook(lambda m, a, out: out * gate)
    loss, count = lm_loss_sum(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, True)
    loss.backward()
    handle.remove()
    scores = compute_scores(model, ["gradient"], ids, kind="layer")["gradient"]
    assert scores.values[1, 2].item() == pytest.approx(abs(gate.grad.item()) / count, rel=1e-5)
    assert isinstance(scores, UnitScores) and scores.to_frame().columns.tolist() == ["layer", "part", "pruned",
                                                                                     "gradient"]


def test_layer_loss_impact_equals_masking_by_hand():
    model = make_tiny_model("gpt2")
    ids = sample_ids()
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
    base = mean_loss(model, batches, True)
    scores = compute_scores(model, ["loss_impact"], ids, kind="layer")["loss_impact"]
    mask_layers(model, [2], part="attention")
    assert scores.values[2, 1].item() == pytest.approx(mean_loss(model, batches, True) - base, abs=1e-9)
