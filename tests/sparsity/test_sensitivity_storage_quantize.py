"""Sensitivity restores exactly; bitmask checkpoints and int8 models round-trip; size and speed reports."""

from __future__ import annotations

import copy

import pytest
import torch

from sentinel.evaluation.perplexity import perplexity
from sentinel.sparsity import SparsityConfig, SparsityError, find_targets, make_permanent, sparsify, sparsity_stats
from sentinel.sparsity.quantize import load_int8, quantize_int8, save_int8
from sentinel.evaluation.paired import interleaved_speed
from sentinel.sparsity.sensitivity import layer_sensitivity, sensitivity_chart, suggest_sparsity
from sentinel.sparsity.storage import (
    load_compressed, load_compressed_into, pack_bits, save_compressed, size_report, unpack_bits,
)
from tests.conftest import make_tiny_lm, sample_ids

IDS = sample_ids(vocab=200, batch=3, length=24)


def sparse_lm(sparsity: float = 0.5):
    model, tokenizer = make_tiny_lm()
    sparsify(model, SparsityConfig("l1", sparsity))
    make_permanent(model)
    return model, tokenizer


def test_sensitivity_restores_the_model_exactly_after_each_probe():
    model, tokenizer = make_tiny_lm()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    params = {n: p for n, p in model.named_parameters()}
    probes = []

    def evaluate(m):
        probes.append(sum(int((t.weight() == 0).sum()) for t in find_targets(m)))
        return perplexity(m, tokenizer, IDS.tolist(), seq_len=24).perplexity

    def after(done, total, row):
        state = model.state_dict()
        assert all(torch.equal(state[k], original[k]) for k in original), row.name   # bitwise restored
        assert not any(k.endswith("_orig") or k.endswith("_mask") for k in state)

    result = layer_sensitivity(model, evaluate, levels=(0.1, 0.5), on_progress=after)
    targets = find_targets(model)
    assert len(result.rows) == 2 * len(targets)
    assert probes[0] == 0                                      # baseline: nothing pruned
    sizes = {t.name: t.weight().numel() for t in targets}
    assert probes[1:] == [round(r.sparsity * sizes[r.name]) for r in result.rows]   # each probe: one matrix alone
    assert all(p is params[n] for n, p in model.named_parameters())                  # same Parameter objects
    assert all(r.delta == pytest.approx(r.perplexity - result.baseline) for r in result.rows)
    suggestion = suggest_sparsity(result, average=0.5)
    assert set(suggestion) == set(sizes)
    mean = sum(suggestion[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert mean == pytest.approx(0.5, abs=1e-3)
    ranked = sorted(result.at(0.5), key=lambda r: r.delta)
    assert suggestion[ranked[0].name] >= suggestion[ranked[-1].name]          # least sensitive pruned most
    chart = sensitivity_chart(result).to_dict()
    assert chart["mark"]["type"] == "rect" and chart["encoding"]["x"]["field"] == "layer"


def test_sensitivity_refuses_masked_models_and_bad_levels():
    model, _ = make_tiny_lm()
    with pytest.raises(SparsityError, match=r"\(0, 1\)"):
        layer_sensitivity(model, lambda m: 1.0, levels=(0.0,))
    sparsify(model, SparsityConfig("l1", 0.5))
    with pytest.raises(SparsityError, match="make_permanent"):
        layer_sensitivity(model, lambda m: 1.0)


def test_bits_pack_and_unpack():
    mask = torch.rand(7, 5, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == 5        # 35 bits -> 5 bytes
    assert torch.equal(unpack_bits(packed, 35).view(7, 5), mask)


def test_compressed_checkpoint_round_trip_and_sizes(tmp_path):
    model, _ = sparse_lm(0.5)
    path = save_compressed(model, tmp_path / "model.sparse.safetensors")
    state = load_compressed(path)
    reference = model.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in state)
    fresh, _ = make_tiny_lm(seed=5)
    load_compressed_into(fresh, path)
    assert torch.equal(fresh(IDS).logits, model(IDS).logits)
    report = size_report(model)
    stats = sparsity_stats(model)
    assert report.nonzero_parameters == stats.nonzero_parameters < report.total_parameters
    assert report.compressed_bytes < report.dense_bytes
    assert report.dense_bytes >= 4 * report.total_parameters


def test_compressed_save_needs_permanent_masks(tmp_path):
    model, _ = make_tiny_lm()
    sparsify(model, SparsityConfig("l1", 0.5))
    with pytest.raises(SparsityError, match="make_permanent"):
        save_compressed(model, tmp_path / "x.safetensors")


def test_int8_keeps_zeros_and_round_trips_without_pickle(tmp_path):
    model, tokenizer = sparse_lm(0.5)
    quantized = quantize_int8(model)
    assert find_targets(model)[0].module.__class__.__name__ == "Conv1D"        # the original is untouched
    expected = quantized(IDS).logits
    assert (expected - model(IDS).logits).abs().max() < 0.05                   # int8 is close to fp32
    folder = save_int8(quantized, tokenizer, tmp_path / "int8")
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    loaded, loaded_tokenizer = load_int8(folder)
    assert torch.equal(loaded(IDS).logits, expected)                            # exact round trip
    assert loaded_tokenizer is not None
    for name in loaded.sentinel_int8_modules:
        weight, _ = loaded.get_submodule(name)._packed_params._weight_bias()
        assert (weight.int_repr() == 0).float().mean() >= 0.5                     # zeros stay zero in int8


def test_speed_comparison_is_interleaved_and_honest():
    dense, tokenizer = make_tiny_lm()
    sparse = copy.deepcopy(dense)
    sparsify(sparse, SparsityConfig("l1", 0.5))
    make_permanent(sparse)
    result = interleaved_speed({"dense": dense, "sparse": sparse}, tokenizer, repeats=2, prompt_tokens=8,
                               new_tokens=2).report()
    rows = result["rows"]
    assert [r["name"] for r in rows] == ["dense", "sparse"]
    assert rows[0]["prefill_ratio"] is None and rows[0]["verdict"] == "reference"
    assert len(rows[1]["prefill_runs"]) == 2 and rows[1]["prefill_ratio"]["pairs"] == 2
    assert rows[1]["verdict"].startswith("prefill ") and "2 interleaved pairs" in rows[1]["verdict"]
