"""Weight-level sparsity and unit pruning together: removing units from a sparsified model, saving it."""

from __future__ import annotations

import pytest
import torch

from sentinel import apply_plan, load_model, remove_layers, save_model
from sentinel.errors import SentinelError
from sentinel.sparsity import SparsityConfig, find_targets, make_permanent, sparsify, sparsity_stats
from tests.conftest import make_tiny_model, sample_ids

IDS = sample_ids(vocab=96, batch=2, length=12)
PLANS = {"gpt2": {"heads": {0: [1, 2]}, "neurons": {0: [1, 2, 3], 2: [5, 40]}},
         "llama": {"heads": {0: [0, 1, 2, 3]}, "neurons": {0: [1, 2, 3], 2: [5, 40]}}}


def sparsified_pair(family: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same tiny model sparsified twice (seeded, l1: identical masks); the second with its sparsity folded in
    (a model under torch's prune reparametrization cannot be deep-copied)."""
    pair = []
    for _ in range(2):
        model = make_tiny_model(family)
        sparsify(model, SparsityConfig(method="l1", sparsity=0.5))
        pair.append(model)
    make_permanent(pair[1])
    return pair[0], pair[1]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_removing_heads_and_neurons_of_a_sparsified_model_keeps_its_masks(family):
    """Removal slices the sparsity mask with the weight: the model still runs, its zeros stay zeros, and it
    computes what the same removal computes on the model with the sparsity folded in."""
    model, folded = sparsified_pair(family)
    apply_plan(folded, PLANS[family], "remove")
    apply_plan(model, PLANS[family], "remove")
    for t in find_targets(model):
        assert t.module.weight_mask.shape == t.module.weight_orig.shape == t.module.weight.shape
    with torch.no_grad():
        got, want = model(input_ids=IDS).logits, folded(input_ids=IDS).logits
    assert torch.allclose(got, want, atol=1e-6)
    assert sparsity_stats(model).target_zeros == sparsity_stats(folded).target_zeros > 0


def test_removing_a_part_of_a_sparsified_model_keeps_it_running():
    model, folded = sparsified_pair("llama")
    for m in (model, folded):
        remove_layers(m, [0], part="mlp")
    with torch.no_grad():
        assert torch.allclose(model(input_ids=IDS).logits, folded(input_ids=IDS).logits, atol=1e-6)


def test_save_model_refuses_live_sparsity_masks_and_writes_nothing(tmp_path):
    """A folder saved with weight_orig / weight_mask could not be loaded back; say what to do instead."""
    model = make_tiny_model("gpt2")
    sparsify(model, SparsityConfig(method="l1", sparsity=0.5))
    tokenizer = load_model(None, device="cpu").tokenizer
    with pytest.raises(SentinelError, match="make_permanent"):
        save_model(model, tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    make_permanent(model)
    saved = save_model(model, tokenizer, tmp_path / "out")
    back = load_model(saved, device="cpu").model
    with torch.no_grad():
        assert torch.allclose(back(input_ids=IDS).logits, model(input_ids=IDS).logits, atol=1e-6)


def test_targets_name_original_layers_after_a_block_was_removed():
    """Like every other Sentinel view (head maps, plans, active_layers), sparsity reports original layer indices."""
    model = make_tiny_model("gpt2")                       # 3 layers
    remove_layers(model, [1])
    targets = find_targets(model)
    assert {t.layer for t in targets} == {0, 2}
    assert {t.name.split(".")[2] for t in targets} == {"0", "1"}      # module paths are the model's own
    sparsify(model, SparsityConfig(method="l1", sparsity=0.5))
    assert {m.layer for m in sparsity_stats(model).matrices} == {0, 2}
