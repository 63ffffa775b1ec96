"""Weight magnitude: hand computations on raw weight tensors for Conv1D, Linear, fused and GQA layouts."""

from __future__ import annotations

import math

import pytest
import torch

from sentinel import mask_heads, remove_heads
from sentinel.metrics.magnitude import weight_magnitude
from tests.conftest import make_tiny_model

D = 8            # head_dim of the tiny models: hidden 32 / 4 heads
HIDDEN = 32


def fro(t: torch.Tensor) -> float:
    return math.sqrt(float((t.detach().double() ** 2).sum()))


def test_gpt2_conv1d_constant_weights_by_hand():
    model = make_tiny_model("gpt2")
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        attn.c_attn.weight.zero_()                                 # Conv1D weight is [in=32, out=96]
        attn.c_proj.weight.zero_()                                 # [in=32, out=32]
        attn.c_attn.weight[:, 1 * D:2 * D] = 2.0                   # Q of head 1: 32 x 8 entries of 2
        attn.c_attn.weight[:, HIDDEN + 1 * D:HIDDEN + 2 * D] = 1.0  # K of head 1
        attn.c_proj.weight[1 * D:2 * D, :] = 0.5                   # O input rows of head 1
    values = weight_magnitude(model).values
    # ||Q|| = 2 sqrt(256) = 32, ||K|| = 16, ||V|| = 0, ||O|| = 0.5 sqrt(256) = 8
    assert values[0].tolist() == [0.0, 56.0, 0.0, 0.0]


def test_gpt2_conv1d_orientation_on_random_weights():
    model = make_tiny_model("gpt2")
    values = weight_magnitude(model).values
    for layer, block in enumerate(model.transformer.h):
        w, o = block.attn.c_attn.weight, block.attn.c_proj.weight      # [in, out] storage
        for h in range(4):
            cols = slice(h * D, (h + 1) * D)
            want = (fro(w[:, cols]) + fro(w[:, HIDDEN + h * D:HIDDEN + (h + 1) * D])
                    + fro(w[:, 2 * HIDDEN + h * D:2 * HIDDEN + (h + 1) * D]) + fro(o[cols, :]))
            wrong = fro(w[cols, :HIDDEN]) + fro(o[:, cols])              # the transposed (Linear) reading
            assert values[layer, h].item() == pytest.approx(want, rel=1e-9)
            assert abs(values[layer, h].item() - wrong) > 1e-3


@pytest.mark.parametrize("name", ["opt", "bert", "roberta"])
def test_linear_families_by_hand(name):
    model = make_tiny_model(name)
    values = weight_magnitude(model).values
    for layer in range(3):
        if name == "opt":
            a = model.model.decoder.layers[layer].self_attn
            q, k, v, o = a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.out_proj.weight
        else:
            a = getattr(model, name).encoder.layer[layer].attention
            q, k, v, o = a.self.query.weight, a.self.key.weight, a.self.value.weight, a.output.dense.weight
        for h in range(4):
            rows = slice(h * D, (h + 1) * D)                       # Linear weight is [out, in]
            want = fro(q[rows]) + fro(k[rows]) + fro(v[rows]) + fro(o[:, rows])
            assert values[layer, h].item() == pytest.approx(want, rel=1e-9)


def test_gpt_neox_fused_interleaved_by_hand():
    model = make_tiny_model("gpt_neox")
    values = weight_magnitude(model).values
    a = model.gpt_neox.layers[1].attention
    qkv, o = a.query_key_value.weight, a.dense.weight               # qkv rows laid out per head as [q|k|v]
    for h in range(4):
        base = 3 * D * h
        want = (fro(qkv[base:base + D]) + fro(qkv[base + D:base + 2 * D]) + fro(qkv[base + 2 * D:base + 3 * D])
                + fro(o[:, h * D:(h + 1) * D]))
        assert values[1, h].item() == pytest.approx(want, rel=1e-9)


def test_gqa_shares_kv_norm_equally_among_the_group():
    model = make_tiny_model("llama")                               # 8 query heads, 2 K/V heads: groups of 4
    values = weight_magnitude(model).values
    a = model.model.layers[2].self_attn
    d = a.head_dim                                                 # 32 / 8 = 4
    for h in range(8):
        g = h // 4
        rows, kv = slice(h * d, (h + 1) * d), slice(g * d, (g + 1) * d)
        want = (fro(a.q_proj.weight[rows]) + fro(a.o_proj.weight[:, rows])
                + (fro(a.k_proj.weight[kv]) + fro(a.v_proj.weight[kv])) / 4)
        assert values[2, h].item() == pytest.approx(want, rel=1e-9)
    # a whole group's scores add up to its Q and O norms plus its K/V norms counted once
    group0 = values[2, :4].sum().item()
    once = sum(fro(a.q_proj.weight[h * d:(h + 1) * d]) + fro(a.o_proj.weight[:, h * d:(h + 1) * d]) for h in range(4))
    once += fro(a.k_proj.weight[:d]) + fro(a.v_proj.weight[:d])
    assert group0 == pytest.approx(once, rel=1e-9)


def test_pruned_heads_are_nan_and_survivors_keep_their_scores():
    model = make_tiny_model("gpt2")
    before = weight_magnitude(model).values
    mask_heads(model, {0: [2]})
    remove_heads(model, {1: [0, 3]})
    after = weight_magnitude(model).values
    nan = torch.isnan(after)
    assert nan.nonzero().tolist() == [[0, 2], [1, 0], [1, 3]]
    assert torch.equal(after[~nan], before[~nan])                  # original indices survive removal
