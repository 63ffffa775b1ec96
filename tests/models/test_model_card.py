"""Every folder Sentinel saves or exports carries a README.md model card with HF metadata and the pruning summary."""

from __future__ import annotations

import json

from sentinel import remove_heads, save_model
from sentinel.export import export_model
from sentinel.models.card import hub_base_model
from sentinel.pruning.units import remove_layers, remove_neurons
from tests.conftest import make_char_tokenizer, make_tiny_model


def front_matter(text: str) -> dict[str, object]:
    """The card's metadata block, key by key (each value is YAML flow syntax that JSON also reads)."""
    assert text.startswith("---\n")
    block = text.split("---\n")[1]
    meta = {}
    for line in block.strip().splitlines():
        key, _, value = line.partition(": ")
        meta[key] = json.loads(value) if value[:1] in '["' else value
    return meta


def test_saved_folder_has_a_card_saying_what_was_pruned(tmp_path):
    model = make_tiny_model("gpt2")
    remove_heads(model, {0: [1, 2]})
    remove_neurons(model, {1: list(range(10))})
    remove_layers(model, [2])
    folder = save_model(model, make_char_tokenizer(), tmp_path / "m", note={"source": "openai-community/gpt2"})
    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert meta["tags"] == ["pruned", "sentinel"]
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["library_name"] == "transformers"
    assert meta["base_model"] == "openai-community/gpt2"
    assert "Attention heads removed: 2 of 8 (in blocks that remain)." in card
    assert "MLP neurons removed: 10 of" in card
    assert "Blocks removed: 1 of 3 (original layers [2])." in card
    assert "None were measured" in card      # no metrics passed: none invented


def test_card_lists_only_the_metrics_passed_in(tmp_path):
    model = make_tiny_model("bert")
    metrics = {"validation perplexity": {"value": 12.5, "protocol": "256-token windows of the model's own text"}}
    folder = save_model(model, None, tmp_path / "b", note={"measured_metrics": metrics})
    card = (folder / "README.md").read_text()
    assert front_matter(card)["pipeline_tag"] == "fill-mask"
    assert "base_model" not in front_matter(card)
    assert "| validation perplexity | 12.5 | 256-token windows of the model's own text |" in card
    assert "Nothing was pruned" in card


def test_exported_folder_has_a_card(tmp_path):
    model = make_tiny_model("llama")
    remove_neurons(model, {layer: list(range(8)) for layer in range(3)})
    result = export_model(model, make_char_tokenizer(), tmp_path / "e", verify=False)
    card = (tmp_path / "e" / "README.md").read_text()
    assert front_matter(card)["tags"] == ["pruned", "sentinel"]
    assert "MLP neurons removed: 24 of" in card
    assert result.path


def test_local_folders_are_never_named_as_base_model(tmp_path):
    assert hub_base_model([str(tmp_path), None, "meta-llama/Llama-3.2-1B"]) == "meta-llama/Llama-3.2-1B"
    assert hub_base_model(["/abs/path/model", "runs/x/y/z"]) is None


def test_onnx_gguf_and_compressed_tensors_exports_have_a_card(tmp_path):
    from sentinel.exporters import export_format
    from sentinel.sparsity import SparsityConfig, make_permanent, sparsify

    model = make_tiny_model("llama")
    remove_neurons(model, {0: list(range(8))})
    export_format("onnx").export(model, None, tmp_path / "onnx", verify=False)
    assert "MLP neurons removed: 8 of" in (tmp_path / "onnx" / "README.md").read_text()
    sparse = make_tiny_model("llama")
    sparsify(sparse, SparsityConfig(sparsity=0.5, pattern="2:4"))
    make_permanent(sparse)
    export_format("compressed-tensors").export(sparse, None, tmp_path / "ct", verify=False)
    card = (tmp_path / "ct" / "README.md").read_text()
    assert front_matter(card)["library_name"] == "compressed-tensors"
    assert "Weight sparsity:" in card
