"""Neurons and layers get the guarantees heads have: masked == removed, exact unmask, zero gradients, save/load."""

from __future__ import annotations

import copy

import pytest
import torch

from sentinel import (
    active_layers, active_neurons, apply_plan, load_model, mask_layers, mask_neurons, present_neurons, remove_layers,
    remove_neurons, save_model, unmask_layers, unmask_neurons,
)
from sentinel.errors import InvalidPruningPlan
from sentinel.evaluation.size import parameter_count
from sentinel.models import model_state
from sentinel.pruning.growth import grow_neurons
from tests.conftest import ALL_FAMILIES, CAUSAL_FAMILIES, make_char_tokenizer, make_tiny_model, sample_ids

NEURONS = {0: [0, 3, 17, 63], 2: list(range(0, 64, 2))}
MIXED = {"heads": {1: [0]}, "neurons": NEURONS, "layers": {1: ["mlp"], 2: ["attention"]}}


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def generate(model, ids):
    kwargs = dict(max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)
    return model.generate(ids, **kwargs)


def _gqa_heads(model):
    """A head plan every family can remove: a whole K/V group (one head without GQA)."""
    state = model_state(model)
    return {1: list(range(state.kv_group_size))}


@pytest.mark.parametrize("name", ALL_FAMILIES)
@pytest.mark.parametrize("plan", ["neurons", "mixed", "block"])
def test_masked_equals_removed_forward(name, plan):
    model = make_tiny_model(name)
    chosen = {"neurons": {"neurons": NEURONS}, "mixed": {**MIXED, "heads": _gqa_heads(model)},
              "block": {"layers": [1]}}[plan]
    removed = copy.deepcopy(model)
    apply_plan(model, chosen, "mask")
    apply_plan(removed, chosen, "remove")
    ids = sample_ids()
    assert (logits(model, ids) - logits(removed, ids)).abs().max() <= 1e-5
    assert parameter_count(removed) < parameter_count(model)


@pytest.mark.parametrize("name", CAUSAL_FAMILIES)
def test_masked_equals_removed_cached_generate(name):
    model = make_tiny_model(name)
    plan = {**MIXED, "heads": _gqa_heads(model), "layers": {0: ["block"], 2: ["attention"]}}
    removed = copy.deepcopy(model)
    apply_plan(model, plan, "mask")
    apply_plan(removed, plan, "remove")
    ids = sample_ids(batch=2, length=6)
    out = generate(removed, ids)
    assert torch.equal(generate(model, ids), out)
    assert torch.equal(removed.generate(ids, use_cache=False, max_new_tokens=8, do_sample=False,
                                        attention_mask=torch.ones_like(ids), pad_token_id=0), out)


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_unmask_restores_neurons_and_layers_exactly(name):
    model = make_tiny_model(name)
    ids = sample_ids()
    original = logits(model, ids)
    mask_neurons(model, NEURONS)
    mask_layers(model, [1], part="mlp")
    mask_layers(model, [2])
    assert (logits(model, ids) - original).abs().max() > 1e-4
    assert active_layers(model) == {0: ["attention", "mlp"], 1: ["attention"], 2: []}
    unmask_neurons(model)
    unmask_layers(model)
    assert torch.equal(logits(model, ids), original)


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_masked_neurons_and_parts_get_zero_gradient(name):
    model = make_tiny_model(name).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    mask_neurons(model, {1: [2, 5]})
    mask_layers(model, [2], part="mlp")
    ids = sample_ids()
    out = model(ids, labels=ids) if name not in ("bert", "roberta") else model(ids, labels=ids)
    out.loss.backward()
    state = model_state(model)

    def grad_norm(layer, neuron):
        total = 0.0
        for role, view in state.views(layer, "neuron", neuron).items():
            if view is None:
                continue
            for p in model.parameters():
                if p.grad is not None and view.untyped_storage().data_ptr() == p.untyped_storage().data_ptr():
                    offset = view.storage_offset() - p.storage_offset()
                    total += float(torch.as_strided(p.grad, view.shape, view.stride(),
                                                    p.grad.storage_offset() + offset).abs().sum())
        return total

    assert grad_norm(1, 2) == 0.0 and grad_norm(1, 5) == 0.0
    assert grad_norm(1, 3) > 0.0
    assert all(grad_norm(2, n) == 0.0 for n in (0, 7, 63))


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_save_load_round_trip_with_neurons_and_layers(name, tmp_path):
    model = make_tiny_model(name)
    apply_plan(model, {"neurons": {0: [1, 2, 3]}, "layers": {1: ["mlp"]}, "heads": _gqa_heads(model)}, "remove")
    if name not in ("bert", "roberta"):
        remove_layers(model, [2])
    mask_neurons(model, {0: [10]})
    mask_layers(model, [0], part="attention")
    ids = sample_ids()
    folder = save_model(model, make_char_tokenizer(), tmp_path / name)
    loaded = load_model(folder, device="cpu", attn_implementation="eager")
    assert torch.equal(logits(loaded.model, ids), logits(model, ids))
    assert active_neurons(loaded.model) == active_neurons(model)
    assert active_layers(loaded.model) == active_layers(model)


def test_removed_blocks_leave_the_model_and_keep_original_names():
    model = make_tiny_model("gpt2")
    remove_layers(model, [0, 2])
    assert len(model.transformer.h) == 1 and model.transformer.h[0].attn.layer_idx == 0
    assert active_layers(model) == {0: [], 1: ["attention", "mlp"], 2: []}
    remove_neurons(model, {1: [4]})
    assert 4 not in present_neurons(model)[1] and present_neurons(model)[0] == []
    with pytest.raises(InvalidPruningPlan, match="at least one"):
        remove_layers(model, [1])


def test_removing_the_mlp_part_drops_its_weights_and_bias():
    model = make_tiny_model("gpt2")
    remove_layers(model, {1: "mlp"})
    mlp = model.transformer.h[1].mlp
    assert mlp.c_fc.weight.shape == (32, 0) and "bias" not in dict(mlp.c_proj.named_parameters())
    with pytest.raises(InvalidPruningPlan, match="mlp part was removed"):
        grow_neurons(model, {1: [0]})


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_neurons_grow_back_and_fade_in(name):
    model = make_tiny_model(name)
    remove_neurons(model, {1: [3, 4]})
    mask_neurons(model, {1: [9]})
    result = grow_neurons(model, {1: [3, 4, 9]}, warmup_steps=3)
    assert result.added == {1: [3, 4]} and result.reinitialised == {1: [9]}
    assert present_neurons(model)[1] == list(range(model_state(model).num_neurons))
    assert model_state(model).scales("neuron") == {1: {3: 0.25, 4: 0.25, 9: 0.25}}
    assert torch.isfinite(logits(model, sample_ids())).all()
    views = model_state(model).views(1, "neuron", 3)
    assert all(v is None or v.abs().sum() > 0 for role, v in views.items() if not role.endswith("_bias"))


def test_bad_neuron_and_layer_plans_name_the_valid_range():
    model = make_tiny_model("gpt2")
    with pytest.raises(InvalidPruningPlan, match="neurons 0-127"):
        mask_neurons(model, {0: [128]})
    with pytest.raises(InvalidPruningPlan, match="layers 0-2"):
        mask_layers(model, [3])
    with pytest.raises(InvalidPruningPlan, match="part"):
        mask_layers(model, [0], part="ffn")


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "opt", "gpt_neox"])
def test_masking_the_attention_of_a_headless_layer_equals_removing_it(name):
    from sentinel import remove_heads

    model = make_tiny_model(name)
    remove_heads(model, {1: list(range(model_state(model).num_heads))})
    removed = copy.deepcopy(model)
    mask_layers(model, [1], part="attention")
    remove_layers(removed, [1], part="attention")
    ids = sample_ids()
    assert (logits(model, ids) - logits(removed, ids)).abs().max() <= 1e-5


def test_head_metrics_run_on_a_model_without_some_blocks():
    from sentinel.metrics import compute_scores

    model = make_tiny_model("llama")
    remove_layers(model, [1])
    scores = compute_scores(model, ["entropy", "magnitude", "gradient", "loss_impact"], sample_ids())
    for s in scores.values():
        assert torch.isnan(s.values[1]).all() and not torch.isnan(s.values[0]).any(), s.metric
