"""Growth: masked heads re-initialised, removed heads re-added, both fading in and training."""

from __future__ import annotations

import pytest
import torch

from sentinel.errors import InvalidPruningPlan
from sentinel.models import model_heads
from sentinel.pruning import active_heads, mask_heads, masked_heads, present_heads, remove_heads
from sentinel.pruning.growth import GrowthResult, advance_growth, grow_heads, growing_heads
from sentinel.pruning.masks import gate_scales, pruning_history
from sentinel.training import finetune
from tests.conftest import ALL_FAMILIES, make_tiny_lm, make_tiny_model, sample_ids
from tests.training.helpers import tiny_config, tiny_data

GQA = {"llama", "mistral", "qwen2"}


def head_contribution(model, layer: int, head: int, ids: torch.Tensor) -> float:
    """Norm of what one head adds to the residual stream: its gated output through its O columns."""
    heads = model_heads(model)
    proj = heads.adapter.output_projection(heads.modules[layer])
    seen: list[torch.Tensor] = []
    handle = proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    d, local = heads.head_dim, heads.local_index(layer, head)
    out = seen[0][..., local * d:(local + 1) * d]                           # [batch, pos, head_dim]
    return float((out @ heads.head_weights(layer, head).o.detach().T).norm())   # [batch, pos, hidden]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_removed_heads_come_back_as_new_slices_that_start_silent(family):
    model = make_tiny_model(family)
    plan = {0: [0, 1], 2: [2, 3]} if family not in GQA else {0: [0, 1, 2, 3]} if family == "llama" else {0: [0, 1]}
    remove_heads(model, plan)
    ids = sample_ids()
    with torch.no_grad():
        pruned = model(input_ids=ids).logits
    shapes = {n: p.shape for n, p in model.named_parameters()}
    result = grow_heads(model, plan, warmup_steps=0, init_std=0.0)      # zero weights: exactly no contribution
    assert result.added == plan and result.reinitialised == {}
    assert present_heads(model) == {layer: list(range(model_heads(model).num_heads)) for layer in range(3)}
    assert any(p.shape != shapes[n] for n, p in model.named_parameters())
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, pruned, atol=1e-5)


def test_a_masked_head_is_reinitialised_unmasked_and_gated_small():
    model = make_tiny_model("gpt2")
    mask_heads(model, {1: [2]})
    old = model_heads(model).head_weights(1, 2).q.detach().clone()
    result = grow_heads(model, {1: [2]}, warmup_steps=9, init_std=0.01, seed=3)
    assert result.reinitialised == {1: [2]} and result.added == {}
    assert masked_heads(model) == {} and 2 in active_heads(model)[1]
    fresh = model_heads(model).head_weights(1, 2)
    assert not torch.equal(fresh.q, old)
    assert 0.005 < float(fresh.q.detach().std()) < 0.015 and float(fresh.q_bias.detach().abs().max()) == 0.0
    assert gate_scales(model) == {1: {2: pytest.approx(0.1)}}
    assert pruning_history(model)[-1]["op"] == "grow"
    for _ in range(8):
        advance_growth(model)
    assert gate_scales(model) == {1: {2: pytest.approx(0.9)}}       # (8 + 1) / (9 + 1)
    assert advance_growth(model) == [] and growing_heads(model) == []
    assert gate_scales(model) == {}       # fully faded in: the gate is gone, the head is ordinary
    assert GrowthResult.from_dict(result.to_dict()) == result


def test_a_grown_head_starts_near_zero_contribution_and_trains():
    model, tokenizer = make_tiny_lm()
    data = tiny_data(tokenizer)
    ids = torch.tensor(data.train[:2])
    mask_heads(model, {0: [1]})
    grow_heads(model, {0: [1]}, warmup_steps=9, init_std=0.01, lr_multiplier=3.0)      # gate starts at 0.1
    start = head_contribution(model, 0, 1, ids)
    neighbour = head_contribution(model, 0, 0, ids)
    assert start < 0.1 * neighbour
    weights = model_heads(model).head_weights(0, 1).q.detach().clone()
    finetune(model, tokenizer, data, tiny_config(max_steps=9, learning_rate=1e-2))
    assert growing_heads(model) == [] and gate_scales(model) == {}
    assert not torch.equal(model_heads(model).head_weights(0, 1).q, weights)
    assert head_contribution(model, 0, 1, ids) > 3 * start


def test_new_heads_learn_faster_by_their_lr_multiplier():
    deltas = {}
    for multiplier in (1.0, 3.0):
        model, tokenizer = make_tiny_lm()
        mask_heads(model, {0: [1]})
        grow_heads(model, {0: [1]}, warmup_steps=10, lr_multiplier=multiplier, seed=0)
        before = model_heads(model).head_weights(0, 1).o.detach().clone()
        old_head = model_heads(model).head_weights(0, 0).o.detach().clone()
        finetune(model, tokenizer, tiny_data(tokenizer), tiny_config(max_steps=1, learning_rate=1e-3))
        deltas[multiplier] = (model_heads(model).head_weights(0, 1).o - before,
                              model_heads(model).head_weights(0, 0).o - old_head)
    assert torch.allclose(deltas[3.0][0], 3 * deltas[1.0][0], atol=1e-7)
    assert torch.allclose(deltas[3.0][1], deltas[1.0][1], atol=1e-7)      # old heads: the ordinary rate


def test_a_layer_that_lost_every_head_gets_its_forward_back():
    model = make_tiny_model("gpt2")
    remove_heads(model, {1: [0, 1, 2, 3]})
    attn = model_heads(model).modules[1]
    assert type(attn).__name__.startswith("Headless")
    grow_heads(model, {1: [3]}, warmup_steps=2)
    assert not type(attn).__name__.startswith("Headless")
    assert present_heads(model)[1] == [3]
    assert torch.isfinite(model(input_ids=sample_ids()).logits).all()


def test_bad_growth_plans_are_refused():
    model = make_tiny_model("gpt2")
    with pytest.raises(InvalidPruningPlan, match="active"):
        grow_heads(model, {0: [0]})
    llama = make_tiny_model("llama")
    remove_heads(llama, {0: [0, 1, 2, 3]})
    with pytest.raises(InvalidPruningPlan, match="grow back together"):
        grow_heads(llama, {0: [0, 1]})
    with pytest.raises(InvalidPruningPlan, match="warmup_steps"):
        grow_heads(llama, {0: [0, 1, 2, 3]}, warmup_steps=-1)


def test_evenly_thinned_gqa_groups_grow_back_evenly():
    llama = make_tiny_model("llama")                       # groups [0-3], [4-7]
    remove_heads(llama, {1: [0, 4]})
    with pytest.raises(InvalidPruningPlan, match="grow back together"):
        grow_heads(llama, {1: [0]})
    grow_heads(llama, {1: [0, 4]}, warmup_steps=0)
    assert present_heads(llama)[1] == list(range(8)) and llama.model.layers[1].self_attn.num_key_value_groups == 4
    assert torch.isfinite(llama(input_ids=sample_ids()).logits).all()
