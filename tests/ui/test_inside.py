"""Look inside a head: real attention rows, causal, for active, masked and removed heads."""

from __future__ import annotations

import copy

import pytest
import torch

from sentinel.errors import DataError
from sentinel.pruning import mask_heads, remove_heads
from sentinel.ui.inside import head_pattern

TEXT = "the cat sat on the mat and the dog sat on the log"


def test_a_heads_pattern_is_a_causal_attention_matrix(tiny_lm):
    model, tokenizer = tiny_lm
    pattern = head_pattern(model, tokenizer, TEXT, 1, 2, max_tokens=10)
    n = len(pattern.tokens)
    assert pattern.status == "active" and 2 <= n <= 10 and len(pattern.weights) == n
    for q, row in enumerate(pattern.weights):
        assert sum(row) == pytest.approx(1.0, abs=1e-5)
        assert all(w == 0.0 for w in row[q + 1:])                 # a causal model only looks back
    assert len(pattern.top) == min(5, n) and pattern.top[0][1] >= pattern.top[-1][1]
    assert len(pattern.frame()) == n * n


def test_masked_and_removed_heads(tiny_lm):
    model, tokenizer = tiny_lm
    masked, removed = copy.deepcopy(model), copy.deepcopy(model)
    mask_heads(masked, {1: [2]})
    remove_heads(removed, {1: [0, 2]})
    assert head_pattern(masked, tokenizer, TEXT, 1, 2).status == "masked"
    gone = head_pattern(removed, tokenizer, TEXT, 1, 2)
    assert gone.status == "removed" and gone.weights is None and gone.frame().empty
    # head 3 of layer 1 moved to a new local index after the removal: still its own pattern
    after = torch.tensor(head_pattern(removed, tokenizer, TEXT, 1, 3).weights)
    before = torch.tensor(head_pattern(model, tokenizer, TEXT, 1, 3).weights)
    assert torch.allclose(after, before, atol=1e-5)
    with pytest.raises(DataError, match="at least two words"):
        head_pattern(model, tokenizer, "x", 0, 0, max_tokens=1)
