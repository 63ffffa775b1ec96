"""Weight sparsity one matrix at a time: the same masks as scoring every matrix at once, for every scope, pattern
and per-matrix method, with masks held or zeros written in place; the global cut is exact."""

from __future__ import annotations

import copy

import pytest
import torch

from sentinel.sparsity.cut import global_cut
from sentinel.sparsity.masks import SparsityConfig, make_permanent, select_masks, sparsify
from sentinel.sparsity.scores import compute_scores, iter_scores
from sentinel.sparsity.targets import find_targets
from tests.conftest import make_tiny_model

CASES = [("l1", "layer", None), ("l1", "global", None), ("l2", "row", None), ("random", "layer", "2:4"),
         ("random", "global", None), ("wanda", "global", None), ("wanda", "layer", "2:4")]


def whole_model_masks(model, method, scope, pattern, calibration):
    """The masks of the all-at-once path: every matrix's scores in one dict, then select_masks."""
    targets = find_targets(model)
    scores = compute_scores(model, targets, method, calibration, seed=0)
    return select_masks(scores, 0.5, scope, None if pattern is None else (2, 4))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize(("method", "scope", "pattern"), CASES)
def test_one_matrix_at_a_time_gives_the_whole_model_masks(family, method, scope, pattern):
    base = make_tiny_model(family)
    calibration = torch.randint(0, base.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(1))
    wanted = whole_model_masks(copy.deepcopy(base), method, scope, pattern, calibration)
    for hold in (True, False):
        model = copy.deepcopy(base)
        sparsify(model, SparsityConfig(method=method, sparsity=0.5, scope=scope, pattern=pattern),
                 calibration if method == "wanda" else None, hold=hold)
        assert any(hasattr(m, "weight_mask") for m in model.modules()) == hold
        make_permanent(model)
        for target in find_targets(model):
            assert torch.equal(target.weight() != 0, wanted[target.name]), (hold, target.name)


def test_without_holding_the_model_carries_no_mask_copies():
    model = make_tiny_model("gpt2")
    before = {name: p.data_ptr() for name, p in model.named_parameters()}
    sparsify(model, SparsityConfig(method="l1", sparsity=0.5), hold=False)
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == before   # zeroed where they are
    assert not any(name.endswith("weight_mask") for name, _ in model.named_buffers())


def test_the_global_cut_is_the_kth_lowest_with_ties_counted_in_order():
    scores = [torch.tensor([[3.0, 1.0, float("-inf")], [2.0, 2.0, 5.0]]), torch.tensor([[2.0, 0.5, 2.0]])]

    def passes():
        return ((None, s) for s in scores)

    flat = torch.cat([s.flatten() for s in scores]).sort().values
    for k in range(1, flat.numel() + 1):
        key, ties = global_cut(passes, k)
        value = torch.tensor([key], dtype=torch.int32).view(torch.float32).item() if key >= 0 else None
        below = int((flat < flat[k - 1]).sum())
        assert ties == k - below
        if value is not None:
            assert value == flat[k - 1].item()


def test_iter_scores_refuses_methods_that_need_the_whole_model():
    from sentinel.sparsity.targets import SparsityError

    model = make_tiny_model("gpt2")
    with pytest.raises(SparsityError, match="whole model"):
        next(iter_scores(model, find_targets(model), "gradient"))
