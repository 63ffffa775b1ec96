"""SparseGPT: the lazy-block algorithm equals plain column-by-column OBS, exact patterns, families, CLI, and a
lower calibration reconstruction error than magnitude pruning."""

from __future__ import annotations

import pytest
import torch

from sentinel.sparsity import SparsityConfig, SparsityError, find_targets, sparsify
from sentinel.sparsity.masks import SCOPES, scopes_for
from sentinel.sparsity.sparsegpt import HessianAccumulator, sparsegpt_matrix
from tests.conftest import make_tiny_model, sample_ids
from tests.sparsity.test_cli import run_json, text_args  # noqa: F401  (fixture)

CALIBRATION = sample_ids(vocab=96, batch=4, length=16)


def correlated_inputs(tokens: int, columns: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, columns, generator=g, dtype=torch.float64) @ torch.randn(
        columns, columns, generator=g, dtype=torch.float64)


def direct_obs(weight: torch.Tensor, hessian: torch.Tensor, prune: torch.Tensor, dampening: float) -> torch.Tensor:
    """Column by column: zero the pruned weights, w -= err · Hinv[0, :] / Hinv[0, 0], then drop the column
    from the full inverse (Hinv ← Hinv − Hinv[:, 0] Hinv[0, :] / Hinv[0, 0])."""
    h = hessian + dampening * hessian.diag().mean() * torch.eye(hessian.shape[0], dtype=hessian.dtype)
    hinv = torch.linalg.inv(h)
    w = weight.clone()
    for j in range(w.shape[1]):
        err = torch.where(prune[:, j], w[:, j], torch.zeros_like(w[:, j])) / hinv[0, 0]
        w[:, j:] -= err[:, None] * hinv[0][None, :]
        hinv = (hinv - hinv[:, :1] @ hinv[:1, :] / hinv[0, 0])[1:, 1:]
    return w


@pytest.mark.parametrize("block_size", [8, 3])
@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_lazy_blocks_equal_direct_obs(block_size, pattern):
    if pattern is not None and block_size % pattern[1]:
        block_size = 4
    x = correlated_inputs(40, 8)
    hessian = 2 * x.t() @ x / x.shape[0]
    weight = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    new, keep = sparsegpt_matrix(weight, hessian, 0.5, pattern, block_size=block_size, dampening=0.01)
    expected = direct_obs(weight, hessian, ~keep, 0.01)
    assert torch.allclose(new, expected, atol=1e-9)
    assert (new[~keep] == 0).all() and (new[keep] != 0).all()


def test_unstructured_mask_is_the_lowest_w2_over_d2_of_each_row():
    x = correlated_inputs(40, 8)
    hessian = 2 * x.t() @ x / x.shape[0]
    weight = torch.randn(5, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, keep = sparsegpt_matrix(weight, hessian, 0.5, block_size=8, dampening=0.01)
    h = hessian + 0.01 * hessian.diag().mean() * torch.eye(8, dtype=hessian.dtype)
    d = torch.linalg.cholesky(torch.linalg.inv(h), upper=True).diag()
    scores = weight ** 2 / d ** 2
    lowest = torch.topk(scores, 4, dim=1, largest=False).indices
    assert (keep.gather(1, lowest) == 0).all() and (keep.sum(1) == 4).all()


def test_dead_inputs_are_zeroed():
    x = correlated_inputs(40, 8)
    x[:, 3] = 0
    weight = torch.randn(4, 8, dtype=torch.float64)
    new, keep = sparsegpt_matrix(weight, 2 * x.t() @ x, 0.25, block_size=4)
    assert (new[:, 3] == 0).all() and not keep[:, 3].any()
    assert torch.isfinite(new).all()


def test_hessian_accumulator_is_2_xtx_over_tokens():
    x = correlated_inputs(30, 6)
    acc = HessianAccumulator(6)
    acc.add(x[:10].float().reshape(2, 5, 6))
    acc.add(x[10:].float())
    assert torch.allclose(acc.hessian(), 2 * x.t() @ x / 30, rtol=1e-5)
    with pytest.raises(SparsityError, match="width"):
        acc.add(torch.zeros(2, 5))
    with pytest.raises(SparsityError, match="No calibration"):
        HessianAccumulator(3).hessian()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_unstructured_is_exact_per_row(family):
    model = make_tiny_model(family)
    result = sparsify(model, SparsityConfig("sparsegpt", 0.37, column_block=16), calibration=CALIBRATION)
    for t in find_targets(model):
        w = t.weight()
        assert ((w == 0).sum(1) == round(0.37 * w.shape[1])).all(), t.name
        assert hasattr(t.module, "weight_mask"), t.name               # recorded like every method's masks
    assert result.stats.sparsity == pytest.approx(0.37, abs=0.01)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_pattern_is_exact(family, pattern):
    n, m = (int(p) for p in pattern.split(":"))
    model = make_tiny_model(family)
    sparsify(model, SparsityConfig("sparsegpt", pattern=pattern), calibration=CALIBRATION)
    for t in find_targets(model):
        w = t.weight()
        assert ((w != 0).reshape(w.shape[0], -1, m).sum(-1) == n).all(), t.name


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_reconstruction_error_is_below_magnitude(family):
    """‖WX − ŴX‖ / ‖WX‖ on the first block's calibration inputs, summed over its matrices."""
    dense = make_tiny_model(family)
    targets = find_targets(dense)
    first = [t for t in targets if t.layer == targets[0].layer]    # first block: same inputs for every method
    inputs: dict[str, list[torch.Tensor]] = {t.name: [] for t in first}
    hooks = [t.module.register_forward_pre_hook(lambda mod, args, name=t.name: inputs[name].append(args[0]))
             for t in first]
    with torch.no_grad():
        for batch in torch.split(CALIBRATION, 4):
            dense(input_ids=batch)
    for h in hooks:
        h.remove()
    pruned = {}
    for method in ("l1", "sparsegpt"):
        model = make_tiny_model(family)
        sparsify(model, SparsityConfig(method, 0.5, scope="row"), calibration=CALIBRATION)
        pruned[method] = {t.name: t.weight().detach() for t in find_targets(model)}
    relative = {m: 0.0 for m in pruned}
    for t in first:
        x = torch.cat([a.reshape(-1, a.shape[-1]) for a in inputs[t.name]])
        w = t.weight().detach()
        for m, p in pruned.items():
            relative[m] += float(torch.linalg.norm(x @ (w - p[t.name]).t()) / torch.linalg.norm(x @ w.t()))
    # summed over the block: greedy OBS is not optimal for every single matrix (a tiny Llama's k_proj ties)
    assert relative["sparsegpt"] < 0.9 * relative["l1"], relative


def test_bad_settings_are_refused():
    with pytest.raises(SparsityError, match="global"):
        SparsityConfig("sparsegpt", scope="global").validate()
    with pytest.raises(SparsityError, match="dampening"):
        SparsityConfig("sparsegpt", dampening=0).validate()
    with pytest.raises(SparsityError, match="calibration"):
        sparsify(make_tiny_model("gpt2"), SparsityConfig("sparsegpt"))
    with pytest.raises(SparsityError, match="divisible"):
        sparsify(make_tiny_model("gpt2"), SparsityConfig("sparsegpt", pattern="4:8", column_block=12),
                 calibration=CALIBRATION)


def test_scopes_offered_for_sparsegpt_are_the_ones_it_accepts():
    assert scopes_for("sparsegpt") == ("layer", "row") and scopes_for("wanda") == SCOPES
    for scope in SCOPES:
        config = SparsityConfig("sparsegpt", 0.5, scope)
        if scope in scopes_for("sparsegpt"):
            config.validate()
        else:
            with pytest.raises(SparsityError, match="not 'global'"):
                config.validate()
    with pytest.raises(SparsityError, match="column block divisible by 4, got 66"):     # before any calibration
        SparsityConfig("sparsegpt", pattern="2:4", column_block=66).validate()


def test_earlier_zeros_stay(tiny_gpt2):
    sparsify(tiny_gpt2, SparsityConfig("l1", 0.3))
    before = {t.name: t.weight() == 0 for t in find_targets(tiny_gpt2)}
    sparsify(tiny_gpt2, SparsityConfig("sparsegpt", 0.5), calibration=CALIBRATION)
    for t in find_targets(tiny_gpt2):
        assert (t.weight()[before[t.name]] == 0).all(), t.name


def test_cli_sparsify_sparsegpt(tiny_lm_dir, text_args, tmp_path, capsys):  # noqa: F811
    result = run_json(["sparsify", "--model", str(tiny_lm_dir), "--method", "sparsegpt", "--sparsity", "0.5",
                       "--column-block", "32", "--out", str(tmp_path / "sg"), *text_args], capsys)
    assert result["sparsity"] == pytest.approx(0.5)
    assert result["config"]["method"] == "sparsegpt" and result["perplexity_final"] > 1
