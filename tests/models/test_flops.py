"""One FLOP count (sentinel.models.flops.forward_flops): the whole model is the body plus the LM head, and both
of its callers — budgets (body) and the paired speed comparison (whole model) — get what the shapes say."""

from __future__ import annotations

import copy

import pytest
from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel import apply_plan
from sentinel.evaluation.paired import FLOPS_CONTEXT, compare_speed
from sentinel.metrics import compute_scores
from sentinel.models.flops import forward_flops
from sentinel.pruning.budget import select_budget
from tests.conftest import make_tiny_model

# A plan per family that removes whole K/V groups (Llama: 8 query heads share 2 K/V heads, 4 per group),
# some neurons and one whole block.
PLANS = {
    "gpt2": {"heads": {0: [1, 3]}, "neurons": {2: [0, 5, 7]}, "layers": {1: ["block"]}},
    "llama": {"heads": {0: [0, 1, 2, 3]}, "neurons": {2: [0, 5, 7]}, "layers": {1: ["block"]}},
    "gptj": {"heads": {0: [1, 3]}, "neurons": {2: [0, 5, 7]}, "layers": {1: ["block"]}},
    "phi": {"heads": {0: [1, 3]}, "neurons": {2: [0, 5, 7]}, "layers": {1: ["block"]}},
    "falcon": {"heads": {0: [0, 1]}, "neurons": {2: [0, 5, 7]}, "layers": {1: ["block"]}},   # 2 per K/V head
}
# (query heads, K/V heads) each family's plan takes from layer 0
LOST = {"gpt2": (2, 2), "llama": (4, 1), "gptj": (2, 2), "phi": (2, 2), "falcon": (2, 1)}


def shapes(config) -> dict[str, int]:
    """hidden, heads, K/V heads, head size, MLP width, vocabulary and the number of MLP input projections,
    read from a GPT-2, GPT-J, Llama, Phi or Falcon config."""
    if config.model_type in ("gpt2", "gptj"):
        d, h = config.n_embd, config.n_head
        return dict(d=d, h=h, kv=h, hd=d // h, mlp=config.n_inner or 4 * d, vocab=config.vocab_size, mlp_in=1)
    d, h = config.hidden_size, config.num_attention_heads
    hd = getattr(config, "head_dim", None) or d // h
    mlp = config.ffn_hidden_size if config.model_type == "falcon" else config.intermediate_size
    return dict(d=d, h=h, kv=config.num_key_value_heads, hd=hd, mlp=mlp, vocab=config.vocab_size,
                mlp_in=2 if config.model_type == "llama" else 1)    # Llama: gate_proj and up_proj


def expected_body(config, seq: int, layers: list[tuple[int, int, int]]) -> int:
    """2 x projection weights + 4 x seq x head size per query head, for each present layer's (query heads,
    K/V heads, MLP width)."""
    s = shapes(config)
    total = 0
    for h, kv, mlp in layers:
        attention = s["d"] * (h + 2 * kv) * s["hd"] + h * s["hd"] * s["d"]        # q, k, v in; o out
        feed_forward = (s["mlp_in"] + 1) * s["d"] * mlp                            # in (and gate), out
        total += 2 * (attention + feed_forward) + 4 * seq * h * s["hd"]
    return total


def expected_head(config) -> int:
    """The LM head: a [vocab, hidden] matrix, 2 FLOPs per weight; the embedding lookup counts nothing."""
    s = shapes(config)
    return 2 * s["vocab"] * s["d"]


def unpruned(config) -> list[tuple[int, int, int]]:
    s = shapes(config)
    return [(s["h"], s["kv"], s["mlp"])] * config.num_hidden_layers


def pruned_layers(config, family: str) -> list[tuple[int, int, int]]:
    """The layers PLANS[family] leaves: layer 0 lost LOST[family] query and K/V heads (Llama: one whole K/V group
    of 4 query heads), layer 1's block is gone, layer 2 lost three neurons."""
    s = shapes(config)
    lost_heads, lost_kv = LOST[family]
    return [(s["h"] - lost_heads, s["kv"] - lost_kv, s["mlp"]), (s["h"], s["kv"], s["mlp"] - 3)]


def every_linear_layer(model: nn.Module, context: int) -> int:
    """The whole-model count as the speed comparison always defined it: 2 x the weights of every linear layer of
    the model, plus 4 x context per present query channel (query heads x head size) for the attention."""
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, Conv1D)))
    query = 0
    for name, m in model.named_modules():
        if name.endswith("q_proj"):
            query += m.weight.shape[0]                   # Linear: [out, in]
        elif name.endswith("c_attn"):
            query += m.weight.shape[1] // 3              # Conv1D: [in, out], out = q, k and v
        elif name.endswith("self_attention"):
            query += m.num_heads * m.head_dim            # Falcon: q, k and v fused in query_key_value
    return 2 * weights + 4 * context * query


@pytest.mark.parametrize("family", sorted(PLANS))
def test_whole_model_is_body_plus_lm_head_read_off_the_shapes(family):
    model = make_tiny_model(family)
    config = model.config
    removed = copy.deepcopy(model)
    apply_plan(removed, PLANS[family], "remove")
    masked = copy.deepcopy(model)
    apply_plan(masked, PLANS[family], "mask")
    for seq in (16, FLOPS_CONTEXT):
        for m, layers in ((model, unpruned(config)), (masked, unpruned(config)),     # masked units still run
                          (removed, pruned_layers(config, family))):
            body = forward_flops(m, seq, lm_head=False)
            assert body == expected_body(config, seq, layers)
            assert forward_flops(m, seq, lm_head=True) == body + expected_head(config)
            assert forward_flops(m, seq, lm_head=True) == every_linear_layer(m, seq)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_both_call_sites_give_the_counts_they_gave_before(family):
    """The dashboard's before/after speed-up is predicted from the whole model at FLOPS_CONTEXT (128), as
    matmul_flops_per_token did; budgets count the body at their seq_len, as body_flops did."""
    model = make_tiny_model(family)
    config = model.config
    removed = copy.deepcopy(model)
    apply_plan(removed, PLANS[family], "remove")
    assert FLOPS_CONTEXT == 128
    whole_before = expected_body(config, 128, unpruned(config)) + expected_head(config)
    whole_after = expected_body(config, 128, pruned_layers(config, family)) + expected_head(config)
    speed = compare_speed(model, removed, tokenizer=None, measure=False)         # no timing: the prediction only
    assert speed.prefill is None and speed.predicted_speedup == whole_before / whole_after

    for m, layers in ((model, unpruned(config)), (removed, pruned_layers(config, family))):
        scores = {"neuron": compute_scores(m, ["magnitude"], kind="neuron")["magnitude"]}
        result = select_budget(m, scores, "flops=0.2", seq_len=48)
        assert result.flops_before == expected_body(config, 48, layers)
