"""Strategies: count and rounding, the right end of the ranking, min_heads, seeds, scope, GQA groups, registry."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from sentinel import mask_heads, remove_heads
from sentinel.errors import InvalidPruningPlan, SentinelError
from sentinel.metrics import HeadScores, random_scores
from sentinel.pruning.strategies import (
    BasePruningStrategy, EntropyPruningStrategy, GradientPruningStrategy, HybridPruningStrategy,
    LossImpactPruningStrategy, MagnitudePruningStrategy, RandomPruningStrategy, check_min_heads, get_strategy,
    heads_for_ratio, register_strategy, strategy_names,
)
from tests.conftest import make_tiny_model

# 3 layers x 4 heads; every value distinct, so each ranking has one right answer
SCORES = torch.tensor([[0.9, 0.2, 0.5, 0.1],
                       [0.3, 0.8, 0.05, 0.6],
                       [0.7, 0.4, 0.95, 0.15]], dtype=torch.float64)


@pytest.fixture
def gpt2():
    return make_tiny_model("gpt2")


def count(plan: dict[int, list[int]]) -> int:
    return sum(len(v) for v in plan.values())


@pytest.mark.parametrize("ratio, available, expected", [
    (0.25, 10, 2),   # 2.5 -> 2: halves round down
    (0.35, 10, 3),   # 3.5 -> 3
    (0.36, 10, 4),
    (0.3, 10, 3),    # 0.3 x 10 = 3.0000000000000004 in floating point: still 3
    (0.5, 5, 2),
    (0.1, 5, 0),
    (0.0, 12, 0),
    (0.99, 12, 12),
])
def test_ratio_to_head_count(ratio, available, expected):
    assert heads_for_ratio(ratio, available) == expected


def test_magnitude_gradient_loss_prune_the_lowest(gpt2):
    want = {0: [3], 1: [2], 2: [3]}
    for cls, key in [(MagnitudePruningStrategy, "magnitude"), (GradientPruningStrategy, "gradient"),
                     (LossImpactPruningStrategy, "loss_impact")]:
        # ratio 0.25 of 12 heads = 3: the values 0.05, 0.1, 0.15
        plan = cls(0.25).select_heads_to_prune(gpt2, {key: HeadScores(key, SCORES)})
        assert plan == want, cls.__name__


def test_entropy_prunes_the_highest(gpt2):
    plan = EntropyPruningStrategy(0.25).select_heads_to_prune(gpt2, SCORES)
    assert plan == {0: [0], 1: [1], 2: [2]}                        # 0.9, 0.8, 0.95
    normalized = EntropyPruningStrategy(0.25, normalized=True)
    assert normalized.select_heads_to_prune(gpt2, {"entropy_normalized": SCORES}) == plan
    with pytest.raises(SentinelError, match="entropy_normalized"):
        normalized.select_heads_to_prune(gpt2, {"entropy": SCORES})


def test_hybrid_prunes_lowest_combined_rank(gpt2):
    entropy = SCORES
    magnitude = SCORES.flip(1)                                     # an unrelated second ranking
    plan = HybridPruningStrategy(0.25).select_heads_to_prune(
        gpt2, {"entropy_normalized": entropy, "magnitude": magnitude})
    # by hand: importance = 0.5 (1 - rank(entropy)) + 0.5 rank(magnitude), ranks over 12 heads / 11
    rank = lambda t: t.flatten().argsort().argsort().double().reshape(3, 4) / 11  # noqa: E731
    importance = 0.5 * (1 - rank(entropy)) + 0.5 * rank(magnitude)
    lowest = importance.flatten().argsort()[:3].tolist()
    want: dict[int, list[int]] = {}
    for i in sorted(lowest):
        want.setdefault(i // 4, []).append(i % 4)
    assert plan == want


def test_random_is_seeded_and_prunes_the_lowest_draws(gpt2):
    first = RandomPruningStrategy(0.5, seed=7).select_heads_to_prune(gpt2, None)
    assert first == RandomPruningStrategy(0.5, seed=7).select_heads_to_prune(gpt2, None)
    assert count(first) == 6
    draws = random_scores(gpt2, 7).values
    assert first == MagnitudePruningStrategy(0.5).select_heads_to_prune(gpt2, {"magnitude": draws})
    others = {str(RandomPruningStrategy(0.5, seed=s).select_heads_to_prune(gpt2, None)) for s in range(5)}
    assert len(others) > 1


def test_min_heads_skips_full_layers_and_takes_the_next(gpt2):
    scores = SCORES.clone()
    scores[0] = torch.tensor([0.01, 0.02, 0.03, 0.04])            # layer 0 holds the 4 weakest heads
    # ascending: 0:0, 0:1, 0:2, (0:3 skipped: layer 0 keeps 1), 1:2 (0.05), 2:3 (0.15), 1:0 (0.3)
    plan = MagnitudePruningStrategy(0.5, min_heads=1).select_heads_to_prune(gpt2, scores)
    assert plan == {0: [0, 1, 2], 1: [0, 2], 2: [3]}
    plan2 = MagnitudePruningStrategy(0.5, min_heads=2).select_heads_to_prune(gpt2, scores)
    assert plan2 == {0: [0, 1], 1: [0, 2], 2: [1, 3]}
    emptying = MagnitudePruningStrategy(0.34, min_heads=0).select_heads_to_prune(gpt2, scores)
    assert emptying == {0: [0, 1, 2, 3]}                           # round(4.08) = 4, min_heads 0 allows it


def test_impossible_count_raises(gpt2):
    with pytest.raises(InvalidPruningPlan, match="min_heads=1"):
        MagnitudePruningStrategy(0.9).select_heads_to_prune(gpt2, SCORES)   # 11 asked, 9 allowed
    with pytest.raises(InvalidPruningPlan, match="layer 0"):
        MagnitudePruningStrategy(0.9, scope="per_layer").select_heads_to_prune(gpt2, SCORES)


def test_per_layer_scope(gpt2):
    plan = MagnitudePruningStrategy(0.5, scope="per_layer").select_heads_to_prune(gpt2, SCORES)
    assert plan == {0: [1, 3], 1: [0, 2], 2: [1, 3]}               # the two lowest of each layer


def test_only_active_heads_are_candidates_and_counted(gpt2):
    mask_heads(gpt2, {0: [3]})
    remove_heads(gpt2, {1: [2]})
    scores = SCORES.clone()
    scores[0, 3] = scores[1, 2] = math.nan                         # what a metric returns for pruned heads
    plan = MagnitudePruningStrategy(0.2).select_heads_to_prune(gpt2, scores)
    assert plan == {0: [1], 2: [3]}                                # round(0.2 x 10 active) = 2: 0.15, 0.2
    with pytest.raises(SentinelError, match="no score"):
        scores2 = SCORES.clone()
        scores2[2, 2] = math.nan
        MagnitudePruningStrategy(0.2).select_heads_to_prune(gpt2, scores2)


def test_ties_break_by_layer_then_head(gpt2):
    plan = MagnitudePruningStrategy(0.25).select_heads_to_prune(gpt2, torch.ones(3, 4))
    assert plan == {0: [0, 1, 2]}


def test_dataframe_and_shape_checks(gpt2):
    frame = pd.DataFrame(SCORES.numpy())
    assert MagnitudePruningStrategy(0.25).select_heads_to_prune(gpt2, frame) == {0: [3], 1: [2], 2: [3]}
    with pytest.raises(SentinelError, match="layers x heads"):
        MagnitudePruningStrategy(0.25).select_heads_to_prune(gpt2, torch.ones(2, 4))
    with pytest.raises(SentinelError, match="compute it first"):
        MagnitudePruningStrategy(0.25).select_heads_to_prune(gpt2, None)


def test_gqa_whole_groups_for_removal():
    model = make_tiny_model("llama")                               # 3 layers x 8 heads, K/V groups of 4
    scores = torch.arange(24, dtype=torch.float64).reshape(3, 8)
    scores[1, 4:] = -1.0                                           # layer 1 group 1 is the weakest group
    strategy = MagnitudePruningStrategy(0.5, whole_kv_groups=True)
    plan = strategy.select_heads_to_prune(model, scores)
    # 6 groups, prune 3; group means: L0 (1.5, 5.5), L1 (9.5, -1), L2 (17.5, 21.5); each layer keeps one group
    assert plan == {0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: [0, 1, 2, 3]}
    remove_heads(model, plan)                                      # the engine accepts it: whole groups only
    heads_only = MagnitudePruningStrategy(0.125).select_heads_to_prune(make_tiny_model("llama"), scores)
    assert heads_only == {1: [4, 5, 6]}                            # without the flag: single heads


def test_gqa_group_includes_masked_members():
    model = make_tiny_model("llama")
    mask_heads(model, {0: [1]})
    scores = torch.arange(24, dtype=torch.float64).reshape(3, 8)
    scores[0, 1] = math.nan
    plan = MagnitudePruningStrategy(0.2, whole_kv_groups=True).select_heads_to_prune(model, scores)
    assert plan == {0: [0, 1, 2, 3]}                               # round(0.2 x 6) = 1 group, masked head 1 too
    remove_heads(model, plan)


def test_bad_settings_and_registry():
    for ratio in (-0.1, 1.0, 1.5):
        with pytest.raises(InvalidPruningPlan, match=r"\[0, 1\)"):
            get_strategy("magnitude", pruning_ratio=ratio)
    with pytest.raises(SentinelError, match="entropy, gradient, hybrid, loss_impact, magnitude, random"):
        get_strategy("entropie", pruning_ratio=0.1)
    with pytest.raises(SentinelError, match="unexpected keyword"):
        get_strategy("random", pruning_ratio=0.1, bogus=1)
    with pytest.raises(SentinelError):
        get_strategy("random", pruning_ratio=0.1, scope="sideways")
    assert isinstance(get_strategy("entropy", pruning_ratio=0.2, min_heads=2), EntropyPruningStrategy)
    assert get_strategy("hybrid", pruning_ratio=0.2, entropy_weight=0.7).to_dict()["entropy_weight"] == 0.7


def test_register_a_custom_strategy(gpt2, monkeypatch):
    from sentinel.pruning import strategies

    monkeypatch.setattr(strategies, "_REGISTRY", dict(strategies._REGISTRY))   # later tests see the built-ins only

    class LastHeads(BasePruningStrategy):
        name = "last_heads"

        def prune_priority(self, model, head_importances):
            return torch.arange(4, dtype=torch.float64).repeat(3, 1)

    register_strategy("last_heads", LastHeads)
    assert "last_heads" in strategy_names()
    assert get_strategy("last_heads", pruning_ratio=0.25).select_heads_to_prune(gpt2) == {0: [3], 1: [3], 2: [3]}
    with pytest.raises(SentinelError, match="subclass"):
        register_strategy("nope", dict)


def test_check_min_heads_for_explicit_plans(gpt2):
    check_min_heads(gpt2, {0: [0, 1, 2]}, min_heads=1)
    with pytest.raises(InvalidPruningPlan, match="layer 0 would keep 0 of 4"):
        check_min_heads(gpt2, {0: [0, 1, 2, 3]}, min_heads=1)
    check_min_heads(gpt2, {0: [0, 1, 2, 3]}, min_heads=0)
    with pytest.raises(InvalidPruningPlan, match="layer 2 would keep 1 of 4"):
        check_min_heads(gpt2, [(2, 0), (2, 1), (2, 2)], min_heads=2)


def test_growth_counts():
    model = make_tiny_model("gpt2")
    pruned = {0: [0, 1, 2], 1: [0]}
    assert MagnitudePruningStrategy(0.3, growth_ratio=0.5).select_heads_to_grow(model, pruned) == {0: 2}
    by_metric = MagnitudePruningStrategy(0.3, growth_ratio=0.5).select_heads_to_grow(model, pruned, {0: 0.1, 1: 0.9})
    assert by_metric == {0: 1, 1: 1}                               # layer 1 refilled first, then layer 0
    assert MagnitudePruningStrategy(0.3).select_heads_to_grow(model, pruned) == {}
    full = MagnitudePruningStrategy(0.3, growth_ratio=1.0).select_heads_to_grow(model, pruned, SCORES)
    assert full == {0: 3, 1: 1}
