"""Masks switch heads off exactly and reversibly; removal gives the masked model's output with fewer weights."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from sentinel import active_heads, get_layout, mask_heads, present_heads, remove_heads, unmask_heads
from sentinel.errors import InvalidPruningPlan
from sentinel.evaluation.size import parameter_count
from sentinel.models import model_heads
from tests.conftest import ALL_FAMILIES, CAUSAL_FAMILIES, make_tiny_model, sample_ids


def plan_for(model) -> dict[int, list[int]]:
    """Two whole K/V groups in different layers (single heads when there is no GQA), plus one more head."""
    layout = get_layout(model)
    g = layout.kv_group_size
    return {0: list(range(g)), 2: list(range(layout.num_heads - g, layout.num_heads)) + ([1] if g == 1 else [])}


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_masked_equals_removed_forward(name):
    model = make_tiny_model(name)
    ids = sample_ids()
    plan = plan_for(model)
    removed = copy.deepcopy(model)
    mask_heads(model, plan)
    remove_heads(removed, plan)
    assert (logits(model, ids) - logits(removed, ids)).abs().max() <= 1e-5
    assert parameter_count(removed) < parameter_count(model)
    assert present_heads(removed) == active_heads(model)


@pytest.mark.parametrize("name", CAUSAL_FAMILIES)
def test_masked_equals_removed_generate_with_cache(name):
    model = make_tiny_model(name)
    ids = sample_ids(batch=2, length=6)
    plan = plan_for(model)
    removed = copy.deepcopy(model)
    mask_heads(model, plan)
    remove_heads(removed, plan)
    kwargs = dict(max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)
    masked_out = model.generate(ids, **kwargs)
    removed_out = removed.generate(ids, **kwargs)
    assert torch.equal(masked_out, removed_out)
    # the cache really was used, and it reproduces the no-cache result
    no_cache = removed.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(removed_out, no_cache)


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_mask_changes_output_and_unmask_restores_it_exactly(name):
    model = make_tiny_model(name)
    ids = sample_ids()
    original = logits(model, ids)
    mask_heads(model, plan_for(model))
    assert (logits(model, ids) - original).abs().max() > 1e-4
    unmask_heads(model)
    assert torch.equal(logits(model, ids), original)


def test_partial_unmask_and_active_heads():
    model = make_tiny_model("gpt2")
    mask_heads(model, {0: [1, 3], 1: [0]})
    assert active_heads(model) == {0: [0, 2], 1: [1, 2, 3], 2: [0, 1, 2, 3]}
    assert unmask_heads(model, [(0, 3)]) == {0: [3]}
    assert active_heads(model)[0] == [0, 2, 3]


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_masked_heads_get_zero_gradient_and_others_do_not(name):
    model = make_tiny_model(name).train()
    for module in model.modules():  # dropout off, so the check is deterministic
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    layout = get_layout(model)
    g = layout.kv_group_size
    masked = list(range(g))  # a whole K/V group, so shared K/V weights are masked-only too
    mask_heads(model, {1: masked})
    ids = sample_ids()
    model(ids, labels=ids).loss.backward()
    heads = model_heads(model)
    for head in range(layout.num_heads):
        w = heads.head_weights(1, head)
        grads = [_grad_of(model, view) for view in (w.q, w.k, w.v, w.o)]
        total = sum(float(gr.abs().sum()) for gr in grads)
        if head in masked:
            assert total == 0.0
        else:
            assert total > 0.0


def _grad_of(model, view):
    """The gradient entries matching a weight view (views share storage with their parameter)."""
    for p in model.parameters():
        if p.grad is not None and view.untyped_storage().data_ptr() == p.untyped_storage().data_ptr():
            offset = view.storage_offset() - p.storage_offset()
            return torch.as_strided(p.grad, view.shape, view.stride(), p.grad.storage_offset() + offset)
    raise AssertionError("view does not belong to any parameter with a gradient")


def test_repeated_removals_keep_original_indices():
    model = make_tiny_model("gpt2")
    reference = copy.deepcopy(model)
    ids = sample_ids()
    remove_heads(model, {0: [1]})
    remove_heads(model, {0: [3], 2: [0]})
    remove_heads(model, [(0, 0)])
    assert present_heads(model) == {0: [2], 1: [0, 1, 2, 3], 2: [1, 2, 3]}
    mask_heads(reference, {0: [0, 1, 3], 2: [0]})
    assert (logits(model, ids) - logits(reference, ids)).abs().max() <= 1e-5
    # masking after removal also speaks original indices
    mask_heads(model, {0: [2]})
    mask_heads(reference, {0: [2]})
    assert active_heads(model)[0] == []
    assert (logits(model, ids) - logits(reference, ids)).abs().max() <= 1e-5


def test_removing_an_already_removed_head_warns_and_does_nothing(caplog):
    model = make_tiny_model("gpt2")
    remove_heads(model, {1: [2]})
    before = parameter_count(model)
    with caplog.at_level(logging.WARNING):
        assert remove_heads(model, {1: [2]}) == {}
    assert "already removed" in caplog.text
    assert parameter_count(model) == before


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_removing_every_head_of_a_layer(name):
    model = make_tiny_model(name)
    layout = get_layout(model)
    everything = {1: list(range(layout.num_heads))}
    removed = copy.deepcopy(model)
    remove_heads(removed, everything)
    mask_heads(model, everything)
    ids = sample_ids()
    assert present_heads(removed)[1] == []
    assert (logits(model, ids) - logits(removed, ids)).abs().max() <= 1e-5
    if name in CAUSAL_FAMILIES:
        kwargs = dict(max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)
        assert torch.equal(model.generate(ids, **kwargs), removed.generate(ids, **kwargs))


def test_empty_layer_contributes_only_its_output_bias():
    model = make_tiny_model("gpt2")
    remove_heads(model, {0: [0, 1, 2, 3]})
    attn = model.transformer.h[0].attn
    hidden = torch.randn(2, 5, 32)
    out, weights = attn(hidden)
    assert weights is None
    assert torch.equal(out, attn.c_proj.bias.expand(2, 5, 32))


def test_gqa_partial_group_removal_is_refused_with_the_group_named():
    model = make_tiny_model("llama")  # 8 query heads, 2 K/V heads: groups [0-3], [4-7]
    with pytest.raises(InvalidPruningPlan) as err:
        remove_heads(model, {1: [4, 5]})
    assert "[4, 5, 6, 7]" in str(err.value) and "K/V head 1" in str(err.value)
    assert present_heads(model)[1] == list(range(8))  # nothing changed
    # masking part of a group is fine; removing the whole group is fine
    mask_heads(model, {1: [4, 5]})
    remove_heads(model, {1: [4, 5, 6, 7]})
    assert present_heads(model)[1] == [0, 1, 2, 3]
    assert model.model.layers[1].self_attn.k_proj.out_features == 4  # one K/V head of size 4 left


@pytest.mark.parametrize("plan, words", [
    ({5: [0]}, "layers 0-2"),
    ({0: [4]}, "heads 0-3"),
    ({-1: [0]}, "layers 0-2"),
    ([(0, "x")], "not an integer"),
])
def test_bad_indices_name_the_valid_range(plan, words):
    model = make_tiny_model("gpt2")
    with pytest.raises(ValueError) as err:
        mask_heads(model, plan)
    assert words in str(err.value)
    with pytest.raises(ValueError):
        remove_heads(model, plan)


def test_masks_survive_deepcopy_independently():
    """Session copies (the dashboard deep-copies the base model) carry their own gates."""
    model = make_tiny_model("gpt2")
    ids = sample_ids()
    original = logits(model, ids)
    copy_a = copy.deepcopy(model)
    mask_heads(copy_a, {0: [0, 1]})
    assert torch.equal(logits(model, ids), original)
    assert not torch.equal(logits(copy_a, ids), original)
    copy_b = copy.deepcopy(copy_a)
    unmask_heads(copy_b)
    assert torch.equal(logits(copy_b, ids), original)
    assert active_heads(copy_a)[0] == [2, 3]


@pytest.mark.parametrize("plan", [{1: [0, 4]}, {0: [1, 2, 5, 6], 2: [3, 7]}])
def test_gqa_even_removal_from_every_group_matches_masking(plan):
    model = make_tiny_model("llama")  # groups [0-3], [4-7]
    removed = copy.deepcopy(model)
    mask_heads(model, plan)
    remove_heads(removed, plan)
    ids = sample_ids(batch=2, length=6)
    assert (logits(model, ids) - logits(removed, ids)).abs().max() <= 1e-5
    attn = removed.model.layers[1].self_attn
    assert attn.k_proj.out_features == 2 * 4 and attn.num_key_value_groups == (3 if 1 in plan else 4)
    kwargs = dict(max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)
    assert torch.equal(model.generate(ids, **kwargs), removed.generate(ids, **kwargs))


def test_gqa_uneven_removal_names_the_closest_even_plans():
    model = make_tiny_model("llama")
    with pytest.raises(InvalidPruningPlan) as err:
        remove_heads(model, {1: [0, 1, 4]})
    text = str(err.value)
    assert "[0, 1, 4, 5]" in text and "[0, 1, 2, 3, 4, 5, 6, 7]" in text
