"""Attention entropy: the math on hand-built maps, and the hooked collection against full attention maps."""

from __future__ import annotations

import math

import pytest
import torch

from sentinel import mask_heads, remove_heads
from sentinel.metrics.entropy import attention_entropy, collect_attention_stats, map_entropy, visible_key_counts
from tests.conftest import ALL_FAMILIES, make_tiny_model, sample_ids
from tests.metrics.util import reference_entropy, sharpen_attention

CAUSAL = {"gpt2": True, "bert": False, "roberta": False, "llama": True, "mistral": True, "qwen2": True,
          "opt": True, "gpt_neox": True, "gptj": True, "phi": True, "falcon": True}


def test_uniform_attention_has_entropy_log_n():
    n = 7
    probs = torch.full((2, 3, n, n), 1.0 / n)                       # [batch, heads, q, k]
    assert torch.allclose(map_entropy(probs), torch.full((3,), math.log(n), dtype=torch.float64))
    assert torch.allclose(map_entropy(probs, normalized=True), torch.ones(3, dtype=torch.float64))


def test_one_hot_attention_has_zero_entropy():
    probs = torch.zeros(1, 2, 5, 5)
    probs[..., 0] = 1.0                                            # every query looks at key 0 only
    assert torch.equal(map_entropy(probs), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(map_entropy(probs, normalized=True), torch.zeros(2, dtype=torch.float64))


def test_hand_computed_distribution():
    # one query over 3 keys with p = (1/2, 1/4, 1/4): H = 1/2 log 2 + 2 * 1/4 log 4 = 1.5 log 2
    probs = torch.tensor([0.5, 0.25, 0.25]).expand(1, 1, 3, 3)
    assert map_entropy(probs).item() == pytest.approx(1.5 * math.log(2))
    assert map_entropy(probs, normalized=True).item() == pytest.approx(1.5 * math.log(2) / math.log(3))


def test_causal_uniform_attention_normalises_to_one_and_skips_position_zero():
    n = 4
    probs = torch.zeros(1, 1, n, n)
    for t in range(n):
        probs[0, 0, t, : t + 1] = 1.0 / (t + 1)                   # uniform over the t + 1 visible keys
    raw = (math.log(1) + math.log(2) + math.log(3) + math.log(4)) / 4
    assert map_entropy(probs, causal=True).item() == pytest.approx(raw)
    # position 0 sees one key: undefined normalised entropy, left out; positions 1-3 are exactly 1
    assert map_entropy(probs, causal=True, normalized=True).item() == pytest.approx(1.0)


def test_padded_queries_are_left_out_of_the_average():
    probs = torch.zeros(1, 1, 3, 3)
    probs[0, 0, 0, 0] = 1.0                                        # H = 0
    probs[0, 0, 1, :2] = 0.5                                       # H = log 2 (key 2 is padding: p = 0)
    probs[0, 0, 2] = 1.0 / 3                                       # padded query: garbage, must not count
    mask = torch.tensor([[1, 1, 0]])
    assert map_entropy(probs, mask, causal=True).item() == pytest.approx(math.log(2) / 2)
    assert map_entropy(probs, mask, causal=True, normalized=True).item() == pytest.approx(1.0)


def test_visible_key_counts():
    right = torch.tensor([[1, 1, 1, 0]])
    assert visible_key_counts(right, causal=True).tolist() == [[1, 2, 3, 3]]
    assert visible_key_counts(right, causal=False).tolist() == [[3, 3, 3, 3]]
    assert visible_key_counts(torch.tensor([[0, 1, 1]]), causal=True).tolist() == [[0, 1, 2]]
    assert visible_key_counts(torch.ones(1, 5, dtype=torch.long), causal=True, window=2).tolist() == [[1, 2, 2, 2, 2]]


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_hooked_entropy_matches_full_attention_maps(name):
    model = sharpen_attention(make_tiny_model(name))
    ids = sample_ids()
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0                                                # right padding in the second sequence
    with torch.no_grad():
        attentions = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    want_raw, want_norm = reference_entropy(attentions, mask, CAUSAL[name])
    raw, norm = attention_entropy(model, {"input_ids": ids, "attention_mask": mask})
    assert torch.allclose(raw.values, want_raw, atol=1e-5)
    assert torch.allclose(norm.values, want_norm, atol=1e-5)
    assert raw.values.std() > 0.05                                 # the heads really differ
    assert bool(((norm.values >= 0) & (norm.values <= 1 + 1e-6)).all())


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_padded_batch_equals_unpadded_batches(name):
    model = sharpen_attention(make_tiny_model(name))
    ids = sample_ids(length=12)
    short, long = ids[0, :7], ids[1]
    padded = torch.stack([torch.cat([short, torch.zeros(5, dtype=torch.long)]), long])
    mask = torch.ones_like(padded)
    mask[0, 7:] = 0
    together = collect_attention_stats(model, {"input_ids": padded, "attention_mask": mask})
    apart = collect_attention_stats(model, [short[None], long[None]])
    assert together.tokens == apart.tokens == 19
    assert torch.allclose(together.entropy().values, apart.entropy().values, atol=1e-5)
    assert torch.allclose(together.entropy_normalized().values, apart.entropy_normalized().values, atol=1e-5)


def test_any_attention_implementation_is_switched_to_eager_and_restored():
    eager = sharpen_attention(make_tiny_model("gpt2", attn_implementation="eager"))
    sdpa = sharpen_attention(make_tiny_model("gpt2", attn_implementation="sdpa"))
    ids = sample_ids()
    assert torch.allclose(attention_entropy(sdpa, ids)[0].values, attention_entropy(eager, ids)[0].values, atol=1e-6)
    assert sdpa.config._attn_implementation == "sdpa"
    with pytest.raises(IndexError):                                # a token id outside the vocabulary
        attention_entropy(sdpa, torch.tensor([[1, 2, 10_000]]))
    assert sdpa.config._attn_implementation == "sdpa"
    assert all(not m._forward_hooks for m in sdpa.modules())      # no hook left behind


def test_masked_and_removed_heads_have_no_score():
    model = sharpen_attention(make_tiny_model("gpt2"))
    twin = sharpen_attention(make_tiny_model("gpt2"))
    ids = sample_ids()
    mask_heads(model, {0: [1]})
    remove_heads(model, {1: [0, 2], 2: [0, 1, 2, 3]})
    mask_heads(twin, {0: [1], 1: [0, 2], 2: [0, 1, 2, 3]})         # same function, nothing removed
    raw = attention_entropy(model, ids)[0].values
    want = attention_entropy(twin, ids)[0].values
    nan = torch.isnan(raw)
    assert nan.tolist() == [[False, True, False, False], [True, False, True, False], [True] * 4]
    assert torch.equal(nan, torch.isnan(want))
    assert torch.allclose(raw[~nan], want[~nan], atol=1e-6)        # removed layer maps back to original heads


def test_gqa_model_after_removing_a_whole_group():
    model = sharpen_attention(make_tiny_model("llama"))
    remove_heads(model, {0: [4, 5, 6, 7]})
    raw = attention_entropy(model, sample_ids())[0].values
    assert torch.isnan(raw[0, 4:]).all() and not torch.isnan(raw[0, :4]).any() and not torch.isnan(raw[1:]).any()
