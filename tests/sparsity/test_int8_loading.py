"""int8 folders open through load_model (pruned shapes and masks rebuilt) and are counted like other models."""

from __future__ import annotations

import pytest
import torch

from sentinel.errors import ModelLoadError
from sentinel.evaluation.size import parameter_count, weight_bytes
from sentinel.models import load_model
from sentinel.models.int8 import INT8_RECORD, is_int8
from sentinel.pruning import mask_heads, remove_heads
from sentinel.sparsity import SparsityConfig, make_permanent, sparsify, sparsity_stats
from sentinel.sparsity.quantize import quantize_int8, save_int8
from sentinel.ui.protocol import EvalProtocol, protocol_perplexity
from tests.conftest import make_tiny_lm, sample_ids

IDS = sample_ids(vocab=200, batch=2, length=10)


def test_a_pruned_sparse_int8_model_loads_back_through_load_model(tmp_path):
    model, tokenizer = make_tiny_lm()
    remove_heads(model, {0: [1]})                   # shapes the config does not describe
    mask_heads(model, {1: [2]})
    sparsify(model, SparsityConfig("l1", 0.5))
    make_permanent(model)
    quantized = quantize_int8(model)
    folder = save_int8(quantized, tokenizer, tmp_path / "int8", note={"what": "test"})
    loaded = load_model(folder)                     # the path every page and command uses
    assert is_int8(loaded.model) and loaded.device.type == "cpu"
    assert loaded.layout.present[0] == (0, 2, 3)
    assert loaded.record["int8"]["note"] == {"what": "test"}
    with torch.no_grad():
        assert torch.equal(loaded.model(IDS).logits, quantized(IDS).logits)
    # counted like the fp32 model: every parameter once, the same zeros
    fp32, int8 = sparsity_stats(model), sparsity_stats(loaded.model)
    assert (int8.total_parameters, int8.nonzero_parameters) == (fp32.total_parameters, fp32.nonzero_parameters)
    assert [m.matrix for m in int8.matrices] == [m.matrix for m in fp32.matrices]
    assert parameter_count(loaded.model) == parameter_count(model)
    assert weight_bytes(loaded.model) < weight_bytes(model)
    ppl = protocol_perplexity(loaded.model, tokenizer, EvalProtocol(tokens=128, window=32))
    assert ppl.perplexity > 1


def test_int8_folders_refuse_other_devices_and_dtypes_and_bad_records(tmp_path):
    model, tokenizer = make_tiny_lm()
    folder = save_int8(quantize_int8(model), tokenizer, tmp_path / "int8")
    with pytest.raises(ModelLoadError, match="float32"):
        load_model(folder, dtype="float16")
    (folder / INT8_RECORD).write_text('{"format": "something-else", "modules": []}', encoding="utf-8")
    with pytest.raises(ModelLoadError, match="unknown int8 format"):
        load_model(folder)
