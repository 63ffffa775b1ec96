"""`sentinel export`: JSON result for an exportable model; one line on stderr and exit 2 otherwise."""

from __future__ import annotations

import json

from sentinel import remove_heads, save_model
from sentinel.cli import main
from tests.conftest import make_char_tokenizer, make_tiny_model


def test_export_cli_json(tmp_path, capsys):
    model = make_tiny_model("llama")
    remove_heads(model, {layer: [0, 1, 2, 3] for layer in range(3)})
    save_model(model, make_char_tokenizer(), tmp_path / "pruned")
    assert main(["export", "--model", str(tmp_path / "pruned"), "--device", "cpu", "--out",
                 str(tmp_path / "stock"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config_changes"]["num_attention_heads"] == [8, 4]
    assert result["verified_max_abs_diff"] is not None and result["verified_max_abs_diff"] <= 1e-5
    assert result["per_layer_config"]["detail"]
    assert json.loads((tmp_path / "stock" / "config.json").read_text())["num_attention_heads"] == 4


def test_export_cli_refuses_gpt2_head_removal(tmp_path, capsys):
    model = make_tiny_model("gpt2")
    remove_heads(model, {1: [2]})
    save_model(model, make_char_tokenizer(), tmp_path / "pruned")
    assert main(["export", "--model", str(tmp_path / "pruned"), "--device", "cpu", "--out",
                 str(tmp_path / "stock")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "blocks 1 (3 of 4) lost attention heads" in err
    assert not (tmp_path / "stock").exists()
