"""Budgets: the chosen units remove the asked share of prunable parameters / FLOPs, as predicted."""

from __future__ import annotations

import pytest
import torch

from sentinel import apply_plan, mask_heads
from sentinel.errors import InvalidPruningPlan
from sentinel.evaluation.size import parameter_count
from sentinel.metrics import compute_scores
from sentinel.models import model_state
from sentinel.models.flops import forward_flops
from sentinel.pruning.budget import Target, prunable_params, select_budget
from tests.conftest import make_tiny_model, sample_ids


def scores_for(model, kinds=("head", "neuron"), metric="magnitude"):
    return {kind: compute_scores(model, [metric], kind=kind)[metric] for kind in kinds}


def test_prunable_params_and_flops_by_hand_for_gpt2():
    model = make_tiny_model("gpt2")           # 3 layers, hidden 32, 4 heads of 8, MLP 128
    per_layer = (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32)
    assert prunable_params(model) == 3 * per_layer
    weights = 3 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)
    assert forward_flops(model, 16, lm_head=False) == 2 * weights + 4 * 8 * 16 * 12


@pytest.mark.parametrize("allocation", ["global", "uniform"])
@pytest.mark.parametrize("name", ["gpt2", "llama", "opt"])
def test_params_budget_is_met_and_removal_drops_exactly_the_prediction(name, allocation):
    model = make_tiny_model(name)
    result = select_budget(model, scores_for(model), "params=0.5", allocation=allocation,
                           whole_kv_groups=True)
    # global: within one neuron (at most 3 x 32 weights); uniform: within one step (a head in every layer)
    tolerance = 3 * 32 if allocation == "global" else 3 * 4 * 8 * 32 + 3 * 3 * 8
    removed = result.prunable_params_before - result.prunable_params_after
    assert abs(removed - 0.5 * result.prunable_params_before) <= tolerance
    total_before, prunable_before = parameter_count(model), prunable_params(model)
    apply_plan(model, result.plan, "remove")
    assert prunable_before - prunable_params(model) == result.prunable_params_before - result.prunable_params_after
    assert total_before - parameter_count(model) == result.total_params_before - result.total_params_after
    assert 0 < result.total_share_removed < result.prunable_share_removed
    assert torch.isfinite(model(sample_ids()).logits).all()
    if allocation == "uniform":
        counts = {len(v) for v in result.plan.neurons.values()}
        assert len(counts) == 1 and len(result.plan.neurons) == 3


def test_global_allocation_respects_minimums_and_ratio_targets():
    model = make_tiny_model("gpt2")
    result = select_budget(model, scores_for(model), "heads=0.5,neurons=0.25", allocation="uniform")
    assert result.counts == {"heads": 6, "neurons": 96, "layers": 0}
    assert all(len(v) == 2 for v in result.plan.heads.values())
    result = select_budget(model, scores_for(model), "params=0.9", min_heads=3, min_neurons=64)
    assert all(len(v) <= 1 for v in result.plan.heads.values())
    assert all(len(v) <= 64 for v in result.plan.neurons.values())
    assert not result.exact and "closest feasible" in result.reason


def test_flops_budget_and_blocks():
    model = make_tiny_model("llama")
    result = select_budget(model, scores_for(model, ("head", "neuron", "layer"), "random"), "flops=0.3",
                           whole_kv_groups=True, seq_len=32)
    assert result.flops_share_removed == pytest.approx(0.3, abs=0.02)
    before = forward_flops(model, 32, lm_head=False)
    apply_plan(model, result.plan, "remove")
    assert before - forward_flops(model, 32, lm_head=False) == result.flops_before - result.flops_after


def test_bad_targets_and_stale_scores():
    model = make_tiny_model("gpt2")
    for text in ("params=1.5", "size=0.3", "params=0.3,flops=0.2", "heads=x"):
        with pytest.raises(InvalidPruningPlan):
            Target.parse(text)
    scores = scores_for(model)
    mask_heads(model, {0: [1]})
    del scores["neuron"]
    scores["head"].values[0, 1] = float("nan")
    select_budget(model, scores, "params=0.2")                  # the masked head is simply not a candidate
    fresh = make_tiny_model("gpt2")
    with pytest.raises(InvalidPruningPlan, match="no magnitude score"):
        select_budget(fresh, scores, "params=0.2")
    with pytest.raises(InvalidPruningPlan, match="globally"):
        select_budget(fresh, scores_for(fresh, ("layer",), "random"), "params=0.2", allocation="uniform")
    assert model_state(fresh).num_layers == 3


def test_a_block_ratio_takes_the_least_important_block():
    model = make_tiny_model("gpt2")
    scores = scores_for(model, ("layer",), "random")
    result = select_budget(model, scores, "layers=0.34")
    weakest = int(scores["layer"].values[:, 0].argmin())
    assert result.plan.layers == {weakest: ["block"]} and result.counts["layers"] == 1
    before = parameter_count(model)
    apply_plan(model, result.plan, "remove")
    assert before - parameter_count(model) == result.total_params_before - result.total_params_after


def test_a_speedup_target_is_the_flops_share_it_implies():
    target = Target.parse("speedup=1.5")
    assert target.speedup == 1.5 and target.flops is None and target.flops_share == pytest.approx(1 / 3)
    assert target.describe() == "speedup=1.5" and Target.parse(target.describe()) == target
    assert Target.parse("speedup=1").flops_share == 0.0
    for text in ("speedup=0.8", "speedup=inf", "speedup=nan", "speedup=1.5,params=0.2", "speedup=1.5,heads=0.2"):
        with pytest.raises(InvalidPruningPlan):
            Target.parse(text)
    model = make_tiny_model("gpt2")
    scores = scores_for(model)
    by_speed = select_budget(model, scores, "speedup=2", seq_len=32)
    by_flops = select_budget(model, scores, Target(flops=0.5), seq_len=32)
    assert by_speed.plan == by_flops.plan and by_speed.flops_after == by_flops.flops_after
    assert by_speed.target == "speedup=2.0"
    assert by_speed.speedup_predicted == pytest.approx(by_speed.flops_before / by_speed.flops_after)
    assert by_speed.speedup_predicted == pytest.approx(2.0, rel=0.02)
    assert by_speed.to_dict()["speedup_predicted"] == by_speed.speedup_predicted
