"""Recovery without training: exact when the removed units were redundant, better than nothing on random
weights, and `bias` equal to the removed heads' mean contribution computed by hand."""

from __future__ import annotations

import copy

import pytest
import torch

from sentinel import remove_heads, remove_neurons, save_model
from sentinel.export import export_model
from sentinel.models import load_model
from sentinel.models.heads import model_heads
from sentinel.pruning.recovery import RecoveryError, recover
from tests.conftest import make_char_tokenizer, make_tiny_model, sample_ids


def _batches(n: int = 4, length: int = 24) -> list[dict[str, torch.Tensor]]:
    batches = []
    for seed in range(n):
        ids = sample_ids(batch=2, length=length, seed=seed + 10)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return batches


def _logits(model, ids=None):
    with torch.no_grad():
        return model(input_ids=sample_ids(batch=2, length=16, seed=99) if ids is None else ids).logits


def _duplicate_heads(model, layer: int, pairs: list[tuple[int, int]]) -> None:
    """Make head `twin` an exact copy of head `source` (Q, K, V and its output-projection columns)."""
    heads = model_heads(model)
    with torch.no_grad():
        for source, twin in pairs:
            a, b = heads.head_weights(layer, source), heads.head_weights(layer, twin)
            for name in ("q", "k", "v", "o", "q_bias", "k_bias", "v_bias"):
                if getattr(a, name) is not None:
                    getattr(b, name).copy_(getattr(a, name))


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_lstsq_restores_a_layer_exactly_when_the_removed_head_had_a_twin(family):
    model = make_tiny_model(family)
    _duplicate_heads(model, 1, [(0, 2)])
    reference = copy.deepcopy(model)
    remove_heads(model, {1: [2]})
    before = (_logits(model) - _logits(reference)).abs().max()
    result = recover(model, reference, _batches(), method="lstsq", ridge=0.0)
    assert [(f.layer, f.part) for f in result.fits] == [(1, "attention")]
    assert result.fits[0].error_after < 1e-9 < result.fits[0].error_before
    assert before > 1e-3
    assert torch.allclose(_logits(model), _logits(reference), atol=1e-4)


def test_lstsq_restores_a_redundant_kv_group_in_grouped_query_attention():
    model = make_tiny_model("llama")   # 8 query heads, 2 K/V heads: heads 4-7 read K/V head 1
    _duplicate_heads(model, 0, [(h, h + 4) for h in range(4)])   # K/V head 1 and its queries copy group 0
    reference = copy.deepcopy(model)
    remove_heads(model, {0: [4, 5, 6, 7]})
    result = recover(model, reference, _batches(), method="lstsq", ridge=0.0)
    assert result.fits[0].error_after < 1e-9
    assert torch.allclose(_logits(model), _logits(reference), atol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox", "bert"])
def test_lstsq_lowers_reconstruction_error_on_random_weights(family):
    model = make_tiny_model(family)
    reference = copy.deepcopy(model)
    plan = {0: [4, 5, 6, 7], 2: [0, 1, 2, 3]} if family == "llama" else {0: [1], 2: [0, 3]}
    remove_heads(model, plan)
    remove_neurons(model, {1: list(range(1, 64, 2))})
    gap_before = (_logits(model) - _logits(reference)).pow(2).mean()
    result = recover(model, reference, _batches(), method="lstsq")
    assert [(f.layer, f.part) for f in result.fits] == [(0, "attention"), (1, "mlp"), (2, "attention")]
    assert all(f.error_after < f.error_before for f in result.fits)
    assert (_logits(model) - _logits(reference)).pow(2).mean() < gap_before


def test_bias_is_the_removed_heads_mean_contribution_by_hand():
    model = make_tiny_model("gpt2")    # Conv1D c_proj: weight [in, out]; head_dim 8
    reference = copy.deepcopy(model)
    batches = _batches()
    inputs = []
    proj = reference.transformer.h[0].attn.c_proj
    handle = proj.register_forward_hook(lambda m, args, out: inputs.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        for batch in batches:
            reference(**batch)
    handle.remove()
    x = torch.cat(inputs).double()                                  # [tokens, 32]
    removed = list(range(8, 16))                                    # head 1's channels
    by_hand = proj.bias.double() + x[:, removed].mean(0) @ proj.weight.double()[removed]
    remove_heads(model, {0: [1]})
    result = recover(model, reference, batches, method="bias")
    assert result.fits[0].error_after <= result.fits[0].error_before
    assert torch.allclose(model.transformer.h[0].attn.c_proj.bias.double(), by_hand, atol=1e-6)


def test_bias_creates_a_llama_bias_that_saves_and_reloads(tmp_path):
    model = make_tiny_model("llama")
    reference = copy.deepcopy(model)
    remove_heads(model, {1: [0, 1, 2, 3]})
    result = recover(model, reference, _batches(), method="bias")
    assert model.config.attention_bias is True and "attention_bias" in result.notes[0]
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    assert model.model.layers[1].self_attn.o_proj.bias.abs().sum() > 0
    save_model(model, make_char_tokenizer(), tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert torch.allclose(_logits(loaded.model), _logits(model), atol=1e-5)
    remove_heads(model, {layer: [0, 1, 2, 3] for layer in (0, 2)})   # uniform again: exportable
    assert export_model(model, None, tmp_path / "stock").verified_max_abs_diff <= 1e-5


def test_bias_is_refused_where_the_family_cannot_hold_one():
    model = make_tiny_model("qwen2")
    reference = copy.deepcopy(model)
    remove_heads(model, {0: [0, 1]})
    with pytest.raises(RecoveryError, match="qwen2 has none.*recover='lstsq'"):
        recover(model, reference, _batches(), method="bias")


def test_nothing_removed_means_nothing_refit_and_bad_method_is_an_error():
    model = make_tiny_model("gpt2")
    reference = copy.deepcopy(model)
    assert recover(model, reference, _batches(1), method="lstsq").fits == []
    with pytest.raises(RecoveryError, match="Unknown recovery method"):
        recover(model, reference, _batches(1), method="magic")


def test_blocks_removed_are_paired_by_original_layer_number():
    from sentinel import remove_layers

    model = make_tiny_model("gpt2")
    reference = copy.deepcopy(model)
    remove_layers(model, [1])
    remove_neurons(model, {0: list(range(0, 64, 2))})
    remove_heads(model, {2: [0, 3]})
    gap_before = (_logits(model) - _logits(reference)).pow(2).mean()
    result = recover(model, reference, _batches(), method="lstsq")
    assert [(f.layer, f.part) for f in result.fits] == [(0, "mlp"), (2, "attention")]
    assert all(f.error_after < f.error_before for f in result.fits)
    assert (_logits(model) - _logits(reference)).pow(2).mean() < gap_before


def test_lstsq_is_exact_before_a_removed_block_when_the_removed_head_had_a_twin():
    from sentinel import remove_layers

    model = make_tiny_model("gpt2")
    _duplicate_heads(model, 0, [(1, 3)])
    reference = copy.deepcopy(model)
    remove_layers(model, [2])
    remove_heads(model, {0: [3]})
    result = recover(model, reference, _batches(), method="lstsq", ridge=0.0)
    assert [(f.layer, f.part) for f in result.fits] == [(0, "attention")]
    assert result.fits[0].error_after < 1e-9
    without_block = copy.deepcopy(reference)
    remove_layers(without_block, [2])
    assert torch.allclose(_logits(model), _logits(without_block), atol=1e-4)


def test_bias_after_block_removal_creates_biases_on_the_remaining_llama_blocks():
    from sentinel import remove_layers

    model = make_tiny_model("llama")
    reference = copy.deepcopy(model)
    remove_layers(model, [0])
    remove_neurons(model, {2: list(range(0, 64, 2))})
    result = recover(model, reference, _batches(), method="bias")
    assert [(f.layer, f.part) for f in result.fits] == [(2, "mlp")]
    assert all(model_heads(model).block(layer).mlp.down_proj.bias is not None for layer in (1, 2))
    assert result.fits[0].error_after < result.fits[0].error_before


def test_reference_missing_a_block_is_refused():
    from sentinel import remove_layers

    model = make_tiny_model("gpt2")
    reference = copy.deepcopy(model)
    remove_layers(reference, [1])
    remove_heads(model, {0: [1]})
    with pytest.raises(RecoveryError, match=r"reference lacks blocks the pruned model has \(1\)"):
        recover(model, reference, _batches())
