"""Weight-level masks: exact counts, N:M groups, hand-checked rankings, every family."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.sparsity import (
    SparsityConfig, SparsityError, Target, compute_scores, find_targets, make_permanent, select_masks, sparsify,
    sparsity_stats,
)
from tests.conftest import ALL_FAMILIES, CAUSAL_FAMILIES, make_tiny_model, sample_ids

CALIBRATION = sample_ids(vocab=96, batch=4, length=16)


def zero_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {t.name: (int((t.weight() == 0).sum()), t.weight().numel()) for t in find_targets(model)}


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_targets_are_the_body_matrices_only(family):
    model = make_tiny_model(family)
    targets = find_targets(model)
    head = model.get_output_embeddings()
    assert targets and all(t.module is not head for t in targets)
    assert all(isinstance(t.module, (nn.Linear, Conv1D)) for t in targets)
    assert {t.layer for t in targets} == set(range(model.config.num_hidden_layers))


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("method", ["l1", "random", "wanda"])
def test_layer_scope_gives_each_matrix_its_exact_count(family, method):
    model = make_tiny_model(family)
    sparsify(model, SparsityConfig(method, 0.37, seed=3), calibration=CALIBRATION)
    for name, (zeros, size) in zero_counts(model).items():
        assert zeros == round(0.37 * size), name


@pytest.mark.parametrize("family", CAUSAL_FAMILIES)
@pytest.mark.parametrize("method", ["l2", "gradient", "snip"])
def test_global_scope_hits_the_overall_count(family, method):
    model = make_tiny_model(family)
    result = sparsify(model, SparsityConfig(method, 0.6, scope="global"), calibration=CALIBRATION)
    counts = zero_counts(model).values()
    total = sum(size for _, size in counts)
    assert abs(sum(zeros for zeros, _ in counts) - round(0.6 * total)) <= 1
    assert len({round(z / s, 3) for z, s in counts}) > 1      # one threshold, so matrices differ
    assert result.stats.target_zeros == sum(zeros for zeros, _ in counts)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_row_scope_gives_every_output_row_its_exact_count(family):
    model = make_tiny_model(family)
    sparsify(model, SparsityConfig("wanda", 0.4, scope="row"), calibration=CALIBRATION)
    for t in find_targets(model):
        w = t.weight()                                            # (out, in)
        assert ((w == 0).sum(1) == round(0.4 * w.shape[1])).all(), t.name


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt"])
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_pattern_holds_in_every_group_along_the_input(family, pattern):
    n, m = map(int, pattern.split(":"))
    model = make_tiny_model(family)
    sparsify(model, SparsityConfig("wanda", pattern=pattern), calibration=CALIBRATION)
    for t in find_targets(model):
        stored = t.module.weight
        # the input dimension in storage: dim 0 for GPT-2's Conv1D (in, out), dim 1 for nn.Linear (out, in)
        by_input = stored if isinstance(t.module, Conv1D) else stored.t()      # (in, out)
        groups = by_input.reshape(-1, m, by_input.shape[1]).ne(0).sum(1)    # non-zeros per group of M inputs
        assert (groups == n).all(), t.name


def _one_matrix(weight: torch.Tensor) -> tuple[nn.Module, list[Target]]:
    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.lin(input_ids)

    toy = Toy()
    with torch.no_grad():
        toy.lin.weight.copy_(weight)
    return toy, [Target("lin", toy.lin, 0, "lin")]


W = torch.tensor([[0.5, -0.1, 2.0, -0.3],
                  [-1.5, 0.2, 0.05, 1.0]])


def _pruned_positions(toy, targets, method, calibration=None, sparsity=0.5, **kw) -> set[tuple[int, int]]:
    scores = compute_scores(toy, targets, method, calibration, batch_size=2, **kw)
    keep = select_masks(scores, sparsity)["lin"]
    return {tuple(ix) for ix in (~keep).nonzero().tolist()}


def test_l1_removes_the_smallest_magnitudes_and_l2_agrees():
    toy, targets = _one_matrix(W)
    expected = {(1, 2), (0, 1), (1, 1), (0, 3)}          # |w| = 0.05, 0.1, 0.2, 0.3
    assert _pruned_positions(toy, targets, "l1") == expected
    assert _pruned_positions(toy, targets, "l2") == expected


def test_gradient_and_snip_rank_by_hand_computed_scores():
    # loss_b = sum_i c_i * (W x)_i summed over the batch, so dL/dW_ij = c_i * sum_b x_bj, accumulated over 2 batches
    c = torch.tensor([1.0, -3.0])
    x = torch.tensor([[1.0, 2.0, 0.5, 0.0], [0.0, 1.0, 0.5, 1.0], [2.0, -1.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.5]])
    G = c[:, None] * x.sum(0)[None, :]                   # [[4, 2, 1, 2], [-12, -6, -3, -6]]
    toy, targets = _one_matrix(W)
    loss = lambda model, batch: (model(batch) * c).sum()    # noqa: E731
    grad = compute_scores(toy, targets, "gradient", x, batch_size=2, loss_fn=loss)["lin"]
    snip = compute_scores(toy, targets, "snip", x, batch_size=2, loss_fn=loss)["lin"]
    assert torch.allclose(grad, G.abs())
    assert torch.allclose(snip, (W * G).abs())
    assert toy.lin.weight.grad is None                    # scoring leaves no gradients behind
    # gradient: |G| = [4, 2, 1, 2], [12, 6, 3, 6] -> the three lowest: (0,2)=1, (0,1)=2, (0,3)=2
    assert _pruned_positions(toy, targets, "gradient", x, sparsity=0.375, loss_fn=loss) == {(0, 2), (0, 1), (0, 3)}
    # snip: |W*G| = [2, .2, 2, .6], [18, 1.2, .15, 6] -> lowest three: (1,2)=.15, (0,1)=.2, (0,3)=.6
    assert _pruned_positions(toy, targets, "snip", x, sparsity=0.375, loss_fn=loss) == {(1, 2), (0, 1), (0, 3)}


def test_wanda_multiplies_by_input_feature_norms():
    x = torch.tensor([[3.0, 0.0, 0.1, 4.0], [4.0, 10.0, 0.0, 3.0]])   # two inputs; column norms 5, 10, 0.1, 5
    toy, targets = _one_matrix(W)
    scores = compute_scores(toy, targets, "wanda", x, batch_size=1)
    norms = torch.tensor([5.0, 10.0, 0.1, 5.0])
    assert torch.allclose(scores["lin"], W.abs() * norms)
    # |W|*norm = [2.5, 1, .2, 1.5], [7.5, 2, .005, 5]: column 2 goes first although w=2.0 is the largest weight
    assert _pruned_positions(toy, targets, "wanda", x, sparsity=0.25) == {(1, 2), (0, 2)}


def test_random_is_seeded():
    a, b, c = (make_tiny_model("gpt2") for _ in range(3))
    for model, seed in ((a, 1), (b, 1), (c, 2)):
        sparsify(model, SparsityConfig("random", 0.5, seed=seed))
    ta, tb, tc = (find_targets(m)[0].weight() == 0 for m in (a, b, c))
    assert torch.equal(ta, tb) and not torch.equal(ta, tc)


def test_pruning_again_keeps_old_zeros_and_uses_torch_prune():
    model = make_tiny_model("gpt2")
    sparsify(model, SparsityConfig("l1", 0.3))
    target = find_targets(model)[0]
    assert hasattr(target.module, "weight_orig") and hasattr(target.module, "weight_mask")
    first = target.weight() == 0
    sparsify(model, SparsityConfig("random", 0.6))
    second = target.weight() == 0
    assert (second | ~first).all() and int(second.sum()) == round(0.6 * second.numel())
    assert make_permanent(model) == len(find_targets(model))
    assert not any("orig" in key or "mask" in key for key in model.state_dict())
    assert sparsity_stats(model).sparsity == pytest.approx(0.6, abs=1e-3)


def test_nm_after_unstructured_never_revives_a_zero():
    model = make_tiny_model("llama")
    sparsify(model, SparsityConfig("l1", 0.7))
    before = {t.name: t.weight() == 0 for t in find_targets(model)}
    sparsify(model, SparsityConfig("random", pattern="2:4", seed=4))
    for t in find_targets(model):
        zeros = t.weight() == 0
        assert (zeros | ~before[t.name]).all()                                   # old zeros kept
        assert (zeros.reshape(zeros.shape[0], -1, 4).sum(-1) >= 2).all()          # and at most 2 of 4 survive


def test_per_matrix_sparsities():
    model = make_tiny_model("gpt2")
    names = [t.name for t in find_targets(model)]
    sparsify(model, SparsityConfig("l1", 0.5, per_matrix={names[0]: 0.1, names[1]: 0.9}))
    counts = zero_counts(model)
    assert counts[names[0]][0] == round(0.1 * counts[names[0]][1])
    assert counts[names[1]][0] == round(0.9 * counts[names[1]][1])
    assert counts[names[2]][0] == round(0.5 * counts[names[2]][1])


@pytest.mark.parametrize("config, words", [
    (SparsityConfig("l1", 1.0), "[0, 1)"),
    (SparsityConfig("l1", -0.1), "[0, 1)"),
    (SparsityConfig("l1", pattern="4:4"), "N < M"),
    (SparsityConfig("l1", pattern="2:x"), "N:M"),
    (SparsityConfig("l1", pattern="2:4", scope="global"), "layer"),
    (SparsityConfig("magnitude", 0.5), "Unknown method"),
    (SparsityConfig("l1", 0.5, scope="column"), "Unknown scope"),
    (SparsityConfig("l1", pattern="2:4", scope="row"), "layer"),
])
def test_bad_configs_say_what_is_wrong(config, words):
    with pytest.raises(SparsityError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        sparsify(make_tiny_model("gpt2"), config)


def test_data_methods_need_calibration_and_tied_head_is_refused():
    with pytest.raises(SparsityError, match="calibration"):
        sparsify(make_tiny_model("gpt2"), SparsityConfig("snip", 0.5))
    with pytest.raises(SparsityError, match="tied"):
        find_targets(make_tiny_model("gpt2"), include=("lm_head",))
