"""`sentinel analyze`: the JSON shape, pruned heads as null, CSV rows, values equal to the library's, bad input."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from sentinel import load_model, mask_heads, remove_heads, save_model
from sentinel.cli import main
from sentinel.metrics import weight_magnitude
from tests.conftest import make_char_tokenizer, make_tiny_model


@pytest.fixture
def pruned_dir(tmp_path):
    """The tiny GPT-2 with head 0:1 masked and heads 2:0,3 removed, saved with the char tokenizer."""
    model = make_tiny_model("gpt2")
    model.config.eos_token_id = model.config.bos_token_id = model.config.pad_token_id = 0
    mask_heads(model, {0: [1]})
    remove_heads(model, {2: [0, 3]})
    return save_model(model, make_char_tokenizer(), tmp_path / "pruned")


def analyze(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["analyze", "--device", "cpu", "--samples", "4", "--seq-len", "32", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_shape_with_pruned_heads_as_null(pruned_dir, tiny_text_file, capsys):
    code, out, _ = analyze(capsys, "--model", str(pruned_dir), "--text", str(tiny_text_file), "--json")
    assert code == 0
    result = json.loads(out)
    assert list(result) == ["layers", "heads", "entropy", "entropy_normalized", "magnitude", "gradient"]
    assert result["layers"] == 3 and result["heads"] == 4
    for name in ("entropy", "entropy_normalized", "magnitude", "gradient"):
        grid = result[name]
        assert len(grid) == 3 and all(len(row) == 4 for row in grid)
        nulls = [(layer, head) for layer, row in enumerate(grid) for head, v in enumerate(row) if v is None]
        assert nulls == [(0, 1), (2, 0), (2, 3)], name
    assert all(0 <= v <= 1 for row in result["entropy_normalized"] for v in row if v is not None)
    magnitude = weight_magnitude(load_model(pruned_dir, device="cpu").model).matrix()
    assert result["magnitude"] == magnitude


def test_csv_has_one_row_per_head(pruned_dir, tmp_path, capsys):
    target = tmp_path / "scores.csv"
    code, out, _ = analyze(capsys, "--model", str(pruned_dir), "--metrics", "magnitude,random", "--out", str(target))
    assert code == 0 and "12 rows" in out
    rows = list(csv.DictReader(target.open()))
    assert list(rows[0]) == ["layer", "head", "pruned", "magnitude", "random"]
    assert [(r["layer"], r["head"]) for r in rows] == [(str(l), str(h)) for l in range(3) for h in range(4)]
    pruned = [(int(r["layer"]), int(r["head"])) for r in rows if r["pruned"] == "True"]
    assert pruned == [(0, 1), (2, 0), (2, 3)]
    assert rows[1]["magnitude"] == "" and not math.isnan(float(rows[0]["magnitude"]))


def test_table_output(tiny_gpt2_dir, tiny_text_file, capsys):
    code, out, _ = analyze(capsys, "--model", str(tiny_gpt2_dir), "--text", str(tiny_text_file), "--metrics", "entropy")
    assert code == 0
    assert out.startswith("entropy:\nlayer") and "entropy_normalized:" in out


@pytest.mark.parametrize("extra, words", [
    (["--metrics", "entropy,perplexity"], "Unknown metric perplexity"),
    (["--text", "MISSING"], "does not exist"),
    (["--seq-len", "500"], "longer than the model's 64 positions"),
    (["--samples", "0"], "--samples must be at least 1"),
    (["--json", "--out", "x.csv"], "not allowed with argument"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_gpt2_dir, tiny_text_file, tmp_path, capsys, extra, words):
    extra = [str(tmp_path / "missing.txt") if e == "MISSING" else e for e in extra]
    args = ["--model", str(tiny_gpt2_dir), "--text", str(tiny_text_file), *extra]
    code, _, err = analyze(capsys, *args)
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1


def test_binary_text_file_is_refused(tiny_gpt2_dir, tmp_path, capsys):
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02 not text")
    code, _, err = analyze(capsys, "--model", str(tiny_gpt2_dir), "--text", str(binary))
    assert code == 2 and "binary" in err and len(err.strip().splitlines()) == 1


def test_scores_equal_the_library_on_the_same_tokens(tiny_gpt2_dir, tiny_text_file, capsys):
    from sentinel.data import load_text_blocks
    from sentinel.metrics import attention_entropy

    code, out, _ = analyze(capsys, "--model", str(tiny_gpt2_dir), "--text", str(tiny_text_file),
                           "--metrics", "entropy", "--json")
    loaded = load_model(tiny_gpt2_dir, device="cpu")
    blocks = load_text_blocks(loaded.tokenizer, str(tiny_text_file), block_size=32, max_tokens=4 * 32)
    raw, _ = attention_entropy(loaded.model, blocks.dataloader(batch_size=8))
    assert code == 0
    assert torch.allclose(torch.tensor(json.loads(out)["entropy"], dtype=torch.float64), raw.values)
