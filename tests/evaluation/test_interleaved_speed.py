"""The one N-model interleaved timing (`sentinel.evaluation.paired.interleaved_speed`) and both callers built on it.

Tiny models and no assertions on the timings themselves: only on the rounds, their order and the arithmetic.
"""

from __future__ import annotations

import copy

import pytest

import sentinel.evaluation.paired as paired
from sentinel.errors import DataError
from sentinel.evaluation.paired import InterleavedSpeed, ModelTimings, SpeedRatio, compare_speed, interleaved_speed
from sentinel.pruning import remove_heads


def _three(tiny_lm):
    model, tokenizer = tiny_lm
    smaller = copy.deepcopy(model)
    remove_heads(smaller, {0: [0]})
    return {"a": model, "b": smaller, "c": copy.deepcopy(model)}, tokenizer


def test_every_model_is_timed_once_per_round_and_the_order_rotates(tiny_lm, monkeypatch):
    models, tokenizer = _three(tiny_lm)
    order: list[str] = []
    real = paired.measure_speed
    name_of = {id(m): n for n, m in models.items()}

    def spy(model, *args, **kwargs):
        order.append(name_of[id(model)])
        return real(model, *args, **kwargs)

    monkeypatch.setattr(paired, "measure_speed", spy)
    timed = interleaved_speed(models, tokenizer, repeats=4, prompt_tokens=8, new_tokens=2)
    assert order[:3] == ["a", "b", "c"]                                  # one untimed warm-up each
    assert order[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert timed.names == ["a", "b", "c"] and timed.repeats == 4
    assert all(len(t.prefill) == 4 and len(t.decode) == 4 for t in timed.timings)


def test_ratios_are_per_round_against_the_first_model(tiny_lm):
    models, tokenizer = _three(tiny_lm)
    timed = interleaved_speed(models, tokenizer, repeats=3, prompt_tokens=8, new_tokens=2)
    reference = timed.of("a")
    for name in ("a", "b", "c"):
        for phase in ("prefill", "decode"):
            rounds = [m / r for m, r in zip(timed.of(name).runs(phase), reference.runs(phase))]
            ratio = timed.ratio(name, phase)
            assert ratio == SpeedRatio(sorted(rounds)[1], min(rounds), max(rounds), 3, same_shapes=name != "b")
            low, high = timed.of(name).spread(phase)
            assert low <= timed.of(name).median(phase) <= high
    assert timed.ratio("a", "prefill").median == 1.0 and not timed.ratio("a", "decode").measurable
    with pytest.raises(DataError, match="No model named 'z' was timed"):
        timed.of("z")


def test_both_public_comparisons_are_built_on_the_same_rounds(tiny_lm, monkeypatch):
    models, tokenizer = _three(tiny_lm)
    calls: list[list[str]] = []
    real = paired.interleaved_speed

    def spy(named, *args, **kwargs):
        calls.append(list(named))
        return real(named, *args, **kwargs)

    monkeypatch.setattr(paired, "interleaved_speed", spy)
    pair = compare_speed(models["a"], models["b"], tokenizer, repeats=2, prompt_tokens=8, new_tokens=2)
    table = paired.interleaved_speed(models, tokenizer, repeats=2, prompt_tokens=8, new_tokens=2).report()
    assert calls == [["base", "pruned"], ["a", "b", "c"]]
    assert pair.prefill.pairs == 2 and pair.decode.low <= pair.decode.median <= pair.decode.high
    rows = table["rows"]
    assert [row["name"] for row in rows] == ["a", "b", "c"] and rows[0]["verdict"] == "reference"
    assert rows[0]["prefill_ratio"] is None and all(len(row["prefill_runs"]) == 2 for row in rows)
    per_round = [b / a for a, b in zip(rows[0]["prefill_runs"], rows[1]["prefill_runs"])]
    assert rows[1]["prefill_ratio"]["median"] == pytest.approx(sum(per_round) / 2)   # median of 2 per-round ratios
    assert (rows[1]["prefill_ratio"]["low"], rows[1]["prefill_ratio"]["high"]) == (min(per_round), max(per_round))
    assert rows[1]["verdict"].startswith("prefill ") and ", decode " in rows[1]["verdict"]


def test_one_verdict_rule_the_per_round_ratio_range_decides():
    """Review #5: 'faster' only when every round agrees; a ratio of medians above 1 with a range over 1.0 is not."""
    timed = InterleavedSpeed((ModelTimings("a", (100.0, 100.0, 100.0), (10.0, 10.0, 10.0)),
                              ModelTimings("b", (90.0, 120.0, 130.0), (11.0, 12.0, 13.0))), 3, 8, 2, 1)
    assert timed.verdict("a") == "reference"
    assert timed.verdict("b") == ("prefill no measurable difference (0.90–1.30×, 3 interleaved pairs), "
                                  "decode 1.20× faster (1.10–1.30×, 3 interleaved pairs)")
    assert not timed.ratio("b", "prefill").faster and timed.ratio("b", "decode").faster
    single = SpeedRatio(1.5, 1.5, 1.5, 1)                     # one round: no spread, so no verdict either way
    assert not single.measurable and single.describe().startswith("no measurable difference (1.50× in 1 pair")


def test_per_model_tokenizers_and_refusals(tiny_lm):
    models, tokenizer = _three(tiny_lm)
    timed = interleaved_speed({"a": models["a"]}, tokenizers={"a": tokenizer}, repeats=1, prompt_tokens=8,
                              new_tokens=2)
    assert timed.names == ["a"] and len(timed.of("a").prefill) == 1
    with pytest.raises(DataError, match="at least one model"):
        interleaved_speed({}, tokenizer)
    with pytest.raises(DataError, match="at least 1 round"):
        interleaved_speed(models, tokenizer, repeats=0)


def test_a_range_wider_than_twofold_is_too_noisy_for_a_verdict():
    from sentinel.evaluation.paired import SpeedRatio

    noisy = SpeedRatio(median=1.34, low=1.26, high=7.58, pairs=5)     # every pair "faster", yet 6× apart
    assert noisy.noisy and not noisy.measurable and not noisy.faster
    assert noisy.describe().startswith("too noisy to conclude — rerun")
    steady = SpeedRatio(median=1.34, low=1.26, high=1.45, pairs=5)
    assert not steady.noisy and steady.faster and steady.describe().startswith("1.34× faster")


def test_models_of_the_same_shapes_get_no_speed_verdict_whatever_was_measured():
    import copy

    from sentinel import mask_heads, remove_heads
    from sentinel.evaluation.paired import compute_shapes, interleaved_speed
    from tests.conftest import make_tiny_model

    base = make_tiny_model("gpt2")
    masked, removed = copy.deepcopy(base), copy.deepcopy(base)
    mask_heads(masked, {0: [0, 1]})                    # masked heads still compute: the same shapes
    remove_heads(removed, {0: [0, 1]})
    assert compute_shapes(masked) == compute_shapes(base) != compute_shapes(removed)
    timed = interleaved_speed({"base": base, "masked": masked, "removed": removed}, None, repeats=2,
                              prompt_tokens=4, new_tokens=2)
    same = timed.ratio("masked", "prefill")
    assert same.same_shapes and not same.measurable and not same.faster
    assert same.describe().startswith("no difference expected: the same shapes as the reference")
    assert not timed.ratio("removed", "prefill").same_shapes
    again = type(timed).from_dict(timed.to_dict())     # a job's stored result keeps the shapes
    assert again.ratio("masked", "decode").same_shapes
