"""Perplexity against a hand computation; padding and batching never change it."""

from __future__ import annotations

import math

import pytest
import torch

from sentinel.errors import DataError
from sentinel.evaluation.perplexity import masked_nll_rows, perplexity


def _hand_nll(model, window: list[int], n_target: int) -> tuple[float, int]:
    """Sum of -log softmax(logits)[next token] over the last n_target tokens of one window."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([window])).logits[0]
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    total = 0.0
    for pos in range(len(window) - n_target, len(window)):
        total -= float(logp[pos - 1, window[pos]])
    return total, n_target


def _ids(n: int, vocab: int = 96, seed: int = 3) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_non_overlapping_windows_match_hand_computation(tiny_gpt2):
    ids = _ids(40)
    result = perplexity(tiny_gpt2, None, ids, seq_len=16)
    total, count = 0.0, 0
    for start in range(0, 40, 16):
        window = ids[start:start + 16]
        nll, n = _hand_nll(tiny_gpt2, window, len(window) - 1)
        total, count = total + nll, count + n
    assert result.tokens_evaluated == count == 40 - 3
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)
    assert result.window_length == 16 and result.stride == 16


def test_sliding_window_scores_each_token_once(tiny_gpt2):
    ids = _ids(40)
    result = perplexity(tiny_gpt2, None, ids, seq_len=16, stride=8)
    assert result.tokens_evaluated == 39
    # by hand: windows [0,16) scores 1..15, [8,24) scores 16..23, [16,32) scores 24..31, [24,40) scores 32..39
    total = _hand_nll(tiny_gpt2, ids[0:16], 15)[0]
    for begin in (8, 16, 24):
        total += _hand_nll(tiny_gpt2, ids[begin:begin + 16], 8)[0]
    assert result.nll == pytest.approx(total / 39, rel=1e-5)


def test_padding_and_batch_size_do_not_change_the_result(tiny_gpt2):
    sequences = [_ids(n, seed=n) for n in (5, 16, 11, 3, 9)]
    alone = perplexity(tiny_gpt2, None, sequences, seq_len=16, batch_size=1)
    padded = perplexity(tiny_gpt2, None, sequences, seq_len=16, batch_size=5)
    assert padded.tokens_evaluated == alone.tokens_evaluated == sum(n - 1 for n in (5, 16, 11, 3, 9))
    assert padded.nll == pytest.approx(alone.nll, rel=1e-5)


def test_masked_nll_ignores_padded_positions_even_with_labels(tiny_gpt2):
    ids = torch.tensor([_ids(10)])
    plain = [t.sum().item() for t in masked_nll_rows(tiny_gpt2, ids, torch.ones_like(ids), ids.clone())]
    padded_ids = torch.cat([ids, torch.full((1, 4), 7)], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(1, 4, dtype=torch.long)], dim=1)
    # labels on pads: must be dropped
    padded = [t.sum().item() for t in masked_nll_rows(tiny_gpt2, padded_ids, mask, padded_ids.clone())]
    assert padded[1] == plain[1] == 9
    assert padded[0] == pytest.approx(plain[0], rel=1e-5)


def test_text_needs_tokenizer_and_bad_arguments_raise(tiny_gpt2, tiny_lm):
    with pytest.raises(DataError, match="tokenizer"):
        perplexity(tiny_gpt2, None, "some text", seq_len=8)
    with pytest.raises(DataError, match="positions"):
        perplexity(tiny_gpt2, None, _ids(10), seq_len=1000)
    with pytest.raises(DataError, match="stride"):
        perplexity(tiny_gpt2, None, _ids(10), seq_len=8, stride=9)
    model, tokenizer = tiny_lm
    result = perplexity(model, tokenizer, "Return the value of the attribute.", seq_len=16)
    assert math.isfinite(result.perplexity) and result.tokens_evaluated > 0


def test_perplexity_refuses_an_encoder_model():
    from sentinel.errors import UnsupportedModelError
    from tests.conftest import make_tiny_model, sample_ids

    with pytest.raises(UnsupportedModelError, match="not a causal language model"):
        perplexity(make_tiny_model("bert"), None, sample_ids(), seq_len=8)


def test_a_diverged_model_has_infinite_perplexity_not_an_overflow(monkeypatch):
    import importlib

    from tests.conftest import make_tiny_model, sample_ids

    module = importlib.import_module("sentinel.evaluation.perplexity")  # the package re-exports a same-named function
    def diverged(model, input_ids, *args):   # every window: mean NLL 1e5 nats
        rows = input_ids.shape[0]
        return torch.full((rows,), 1.0e6, dtype=torch.float64), torch.full((rows,), 10)

    monkeypatch.setattr(module, "masked_nll_rows", diverged)
    result = perplexity(make_tiny_model("gpt2"), None, sample_ids(), seq_len=8)
    assert result.perplexity == math.inf and result.nll == 1.0e5
    assert result.ci_low == result.ci_high == math.inf                  # like the value: infinite, never an overflow


def test_the_interval_brackets_the_perplexity_and_is_repeatable(tiny_gpt2):
    from sentinel.evaluation.perplexity import bootstrap_interval

    ids = _ids(400)
    first = perplexity(tiny_gpt2, None, ids, seq_len=32)
    again = perplexity(tiny_gpt2, None, ids, seq_len=32, batch_size=3)
    assert first.ci_low is not None and first.ci_low < first.perplexity < first.ci_high
    assert (first.ci_low, first.ci_high) == pytest.approx((again.ci_low, again.ci_high), rel=1e-9)
    assert first.interval().startswith("95% CI ")
    # one window: no spread to estimate, and nothing pretends there is
    single = perplexity(tiny_gpt2, None, ids[:20], seq_len=32)
    assert single.ci_low is None and single.interval() == ""
    # identical windows have no spread; very different ones a wide interval around the pooled value
    same = bootstrap_interval(torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64), torch.tensor([1, 1, 1]))
    assert same == pytest.approx((math.exp(2.0), math.exp(2.0)))
    low, high = bootstrap_interval(torch.tensor([0.0, 4.0] * 20, dtype=torch.float64), torch.tensor([1, 1] * 20))
    assert low < math.exp(2.0) < high and high / low > 1.5
