"""A uniform head prune whose head count does not divide hidden size (TinyLlama-shaped: 6 of 8 heads)
exports and reloads with plain transformers; a Llama the installed transformers refuses and that has no
equivalent stock architecture (biases on) is one ExportError line, exit 2 in the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from huggingface_hub.errors import StrictDataclassClassValidationError

from sentinel import remove_heads, save_model
from sentinel.cli import main
from sentinel.export import ExportError, export_model
from tests.conftest import make_char_tokenizer, sample_ids


def _six_of_eight(**extra) -> torch.nn.Module:
    """hidden 64, 8 heads of size 8 in 2 K/V groups; one query head per group removed in every block."""
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, num_attention_heads=8, head_dim=8,
                                      num_key_value_heads=2, intermediate_size=64, num_hidden_layers=2,
                                      max_position_embeddings=64, **extra)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    remove_heads(model, {layer: [3, 7] for layer in range(2)})
    return model


def test_six_of_eight_heads_exports_and_reloads_with_equal_logits(tmp_path):
    model = _six_of_eight()
    result = export_model(model, make_char_tokenizer(), tmp_path / "stock")
    config = json.loads((tmp_path / "stock" / "config.json").read_text())
    assert (config["num_attention_heads"], config["head_dim"], config["hidden_size"]) == (6, 8, 64)
    stock = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "stock", dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    ids = sample_ids(vocab=128, batch=2, length=10)
    with torch.no_grad():
        diff = float((stock(input_ids=ids).logits - model(input_ids=ids).logits).abs().max())
    assert diff <= 1e-5 and result.verified_max_abs_diff is not None
    if result.model_type != "llama":   # the installed LlamaConfig refuses 64 % 6: written as Mistral, and said so
        assert result.model_type == "mistral" and any("MistralForCausalLM" in n for n in result.notes)


def test_six_of_eight_heads_cli(tmp_path, capsys):
    save_model(_six_of_eight(), make_char_tokenizer(), tmp_path / "pruned")
    assert main(["export", "--model", str(tmp_path / "pruned"), "--device", "cpu", "--out",
                 str(tmp_path / "stock"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["heads"] == 6 and result["verified_max_abs_diff"] <= 1e-5


def test_inexpressible_llama_is_one_line_exit_2(tmp_path, capsys):
    model = _six_of_eight(attention_bias=True)
    try:
        transformers.LlamaConfig(hidden_size=64, num_attention_heads=6, head_dim=8)
    except (ValueError, StrictDataclassClassValidationError):
        pass
    else:
        pytest.skip("the installed LlamaConfig accepts 6 heads of hidden 64: nothing is inexpressible")
    with pytest.raises(ExportError, match="attention_bias=True"):
        export_model(model, None, tmp_path / "lib")
    assert not (tmp_path / "lib").exists()
    save_model(model, make_char_tokenizer(), tmp_path / "pruned")
    assert main(["export", "--model", str(tmp_path / "pruned"), "--device", "cpu", "--out",
                 str(tmp_path / "stock")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "refuses this llama config" in err
    assert not (tmp_path / "stock").exists()
