"""Compare strategies: every strategy masks the same share, each measured by the protocol, ranked by it."""

from __future__ import annotations

import pytest

from sentinel.pruning import active_heads
from sentinel.pruning.strategies import heads_for_ratio
from sentinel.ui.protocol import EvalProtocol
from sentinel.ui.strategies import CompareRequest, Comparison, StrategyResult, compare_strategies


def test_every_strategy_is_measured_and_ranked_by_perplexity(tiny_lm, monkeypatch):
    import sentinel.ui.strategies as strategies
    from sentinel.ui.protocol import protocol_perplexity

    model, tokenizer = tiny_lm
    small = EvalProtocol(tokens=256, window=32)
    monkeypatch.setattr(strategies, "protocol_perplexity", lambda m, t: protocol_perplexity(m, t, small))
    comparison = compare_strategies(model, tokenizer, CompareRequest(ratio=0.25, random_seeds=2, score_tokens=128,
                                                                      score_block=32))
    labels = [r.label for r in comparison.results]
    assert {"entropy", "magnitude", "gradient", "random (seed 0)", "random (seed 1)"} <= set(labels)
    total = sum(len(h) for h in active_heads(model).values())
    for result in comparison.results:                             # the same share for every strategy
        assert result.pruned == heads_for_ratio(0.25, total) and result.total == total
    table = comparison.table()
    assert table["perplexity"].tolist() == sorted(table["perplexity"].tolist())
    assert table["rank"].tolist() == list(range(1, len(labels) + 1))
    assert comparison.baseline == pytest.approx(protocol_perplexity(model, tokenizer, small).perplexity)


def test_the_recommendation_says_when_entropy_loses_to_random():
    results = [StrategyResult("entropy", None, 14, 48, 180.0, 4064), StrategyResult("magnitude", None, 14, 48, 150.0, 4064),
               StrategyResult("random", 0, 14, 48, 160.0, 4064), StrategyResult("random", 1, 14, 48, 170.0, 4064),
               StrategyResult("random", 2, 14, 48, 175.0, 4064)]
    text = Comparison(0.3, 120.0, results).recommendation()
    assert text.startswith("On this model, masking 14 of 48 heads with **magnitude** hurts least: perplexity 150 "
                           "against 120 unpruned, below random's spread over 3 seeds: 160–175, median 170.")
    assert "The entropy rule (the default) does worse than picking heads at random: 180, above every random seed. " \
           "Prefer magnitude here." in text
    assert Comparison.from_dict(Comparison(0.3, 120.0, results).to_dict()).results == results


def test_no_winner_is_named_inside_randoms_spread():
    results = [StrategyResult("entropy", None, 14, 48, 1.524, 4064),
               StrategyResult("magnitude", None, 14, 48, 1.5213, 4064),
               StrategyResult("random", 0, 14, 48, 1.5201, 4064), StrategyResult("random", 1, 14, 48, 1.5262, 4064)]
    comparison = Comparison(0.3, 1.5012, results)
    assert comparison.random_spread() == (1.5201, (1.5201 + 1.5262) / 2, 1.5262)
    text = comparison.recommendation()
    assert text.startswith("On this model, no strategy clearly hurts least: the lowest perplexity, 1.52 "
                           "(**random (seed 0)**, against 1.501 unpruned), is within random's spread over 2 seeds: "
                           "1.52–1.526, median 1.523.")
    assert "** hurts least" not in text and "Prefer" not in text         # no winner named
    assert "The entropy rule (the default), 1.524, is within random's spread" in text
    table = comparison.table()               # 4 significant digits, so close strategies do not read as equal
    assert table["perplexity"].tolist() == [1.52, 1.521, 1.524, 1.526]
    beaten = Comparison(0.3, 1.5012, [*results[:2], StrategyResult("random", 0, 14, 48, 1.53, 4064)])
    assert "The entropy rule (the default) beats every random seed here (1.524)." in beaten.recommendation()
    assert "**magnitude** hurts least" in beaten.recommendation()


def test_an_already_pruned_model_is_not_called_unpruned():
    results = [StrategyResult("entropy", None, 14, 48, 1.584, 4064), StrategyResult("random", 0, 14, 48, 1.60, 4064)]
    text = Comparison(0.3, 1.581, results, prior_steps=2).recommendation()
    assert "unpruned" not in text and "1.581 for your current model (already pruned in 2 steps)" in text
    again = Comparison.from_dict(Comparison(0.3, 1.581, results, prior_steps=1).to_dict())
    assert again.prior_steps == 1 and again.reference.endswith("(already pruned in 1 step)")
    assert Comparison(0.3, 1.516, results).reference == "unpruned"


def test_compare_strategies_counts_the_models_earlier_steps(tiny_lm, monkeypatch):
    import sentinel.ui.strategies as strategies
    from sentinel.pruning import mask_heads
    from sentinel.ui.protocol import protocol_perplexity

    model, tokenizer = tiny_lm
    small = EvalProtocol(tokens=256, window=32)
    monkeypatch.setattr(strategies, "protocol_perplexity", lambda m, t: protocol_perplexity(m, t, small))
    monkeypatch.setattr(strategies, "strategy_names", lambda: ["random"])
    mask_heads(model, {0: [0]})
    comparison = compare_strategies(model, tokenizer, CompareRequest(ratio=0.25, random_seeds=1, score_tokens=128,
                                                                      score_block=32))
    assert comparison.prior_steps == 1 and "already pruned in 1 step" in comparison.recommendation()
