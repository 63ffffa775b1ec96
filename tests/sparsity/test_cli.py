"""`sentinel sparsify / sensitivity / quantize` and `evaluate`'s sparsity line: JSON results, one-line exit-2 errors."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from sentinel.cli import main
from sentinel.sparsity import find_targets, sparsity_stats
from sentinel.sparsity.quantize import load_int8


@pytest.fixture
def text_args(tiny_text_file):
    text = str(tiny_text_file)
    return ["--text", text, "--eval-text", text, "--calibration-text", text, "--block-size", "16",
            "--calibration-len", "16", "--calibration-blocks", "2", "--eval-tokens", "64", "--batch-size", "2",
            "--device", "cpu"]


def run_json(argv, capsys):
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_sparsify_nm_saves_an_ordinary_checkpoint_and_evaluate_reports_it(tiny_lm_dir, tiny_text_file, text_args,
                                                                           tmp_path, capsys):
    out = tmp_path / "sparse"
    result = run_json(["sparsify", "--model", str(tiny_lm_dir), "--method", "wanda", "--pattern", "2:4",
                       "--compressed", "--report", "--out", str(out), *text_args], capsys)
    assert result["sparsity"] == pytest.approx(0.5)
    assert result["perplexity_oneshot"] == result["perplexity_final"] > 1
    assert result["report"]["size"]["compressed_bytes"] < result["report"]["size"]["dense_bytes"]
    assert [r["name"] for r in result["report"]["speed"]["rows"]][0] == "dense"
    assert (out / "model.sparse.safetensors").is_file()
    plain = transformers.AutoModelForCausalLM.from_pretrained(out)
    for t in find_targets(plain):
        assert ((t.weight() != 0).reshape(t.weight().shape[0], -1, 4).sum(-1) <= 2).all()
    assert sparsity_stats(plain).sparsity == pytest.approx(0.5)
    evaluated = run_json(["evaluate", "--model", str(out), "--text", str(tiny_text_file), "--seq-len", "32",
                          "--runs", "1", "--new-tokens", "2", "--device", "cpu"], capsys)
    assert evaluated["sparsity"] == pytest.approx(0.5)
    dense = run_json(["evaluate", "--model", str(tiny_lm_dir), "--text", str(tiny_text_file), "--seq-len", "32",
                      "--runs", "1", "--new-tokens", "2", "--device", "cpu"], capsys)
    assert "sparsity" not in dense
    # the compressed checkpoint is part of Sentinel's own folder: sparsifying into it again replaces it whole
    again = run_json(["sparsify", "--model", str(tiny_lm_dir), "--method", "l1", "--sparsity", "0.3",
                      "--compressed", "--out", str(out), *text_args], capsys)
    assert again["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert (out / "model.sparse.safetensors").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]   # no staging folder left behind


@pytest.mark.parametrize("schedule", [
    ["--schedule", "oneshot", "--steps", "2", "--distill"],
    ["--schedule", "gradual", "--steps", "4", "--every", "1"],
    ["--schedule", "lottery", "--steps", "2", "--rounds", "1"],
])
def test_sparsify_schedules(tiny_lm_dir, text_args, tmp_path, capsys, schedule):
    out = tmp_path / "sparse"
    result = run_json(["sparsify", "--model", str(tiny_lm_dir), "--sparsity", "0.6", "--scope", "global",
                       *schedule, "--out", str(out), *text_args], capsys)
    assert result["sparsity"] == pytest.approx(0.6, abs=1e-3)
    plain = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert sparsity_stats(plain).sparsity == pytest.approx(0.6, abs=1e-3)


def test_sensitivity_then_per_matrix_sparsify_then_quantize(tiny_lm_dir, tiny_text_file, text_args, tmp_path, capsys):
    table = tmp_path / "sens.json"
    chart = tmp_path / "sens.html"
    data = run_json(["sensitivity", "--model", str(tiny_lm_dir), "--text", str(tiny_text_file), "--eval-tokens",
                     "64", "--out", str(table), "--chart", str(chart), "--device", "cpu"], capsys)
    assert len(data["rows"]) == 2 * 8 and set(json.loads(table.read_text())["suggestion"]) == \
        {row["name"] for row in data["rows"]}
    assert "vega" in chart.read_text()
    chart.write_text("the user's notes")   # an existing file is never replaced without --overwrite
    code = main(["sensitivity", "--model", str(tiny_lm_dir), "--text", str(tiny_text_file), "--chart", str(chart)])
    assert code == 2 and "--overwrite" in capsys.readouterr().err and chart.read_text() == "the user's notes"
    out = tmp_path / "planned"
    result = run_json(["sparsify", "--model", str(tiny_lm_dir), "--per-matrix", str(table), "--out", str(out),
                       *text_args], capsys)
    for matrix in result["matrices"]:
        assert matrix["zeros"] == round(data["suggestion"][matrix["name"]] * matrix["size"])
    q = run_json(["quantize", "--model", str(out), "--out", str(tmp_path / "int8"), "--text", str(tiny_text_file),
                  "--eval-tokens", "64", "--runs", "1"], capsys)
    assert q["size"]["int8_bytes"] < q["size"]["dense_bytes"] and q["perplexity_int8"] > 1
    model, _ = load_int8(tmp_path / "int8")
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size


@pytest.mark.parametrize("argv, words", [
    (["sparsify", "--sparsity", "1.0"], "[0, 1)"),
    (["sparsify", "--sparsity", "-0.2"], "[0, 1)"),
    (["sparsify", "--pattern", "4:2"], "0 < N < M"),
    (["sparsify", "--method", "magnitude"], "Unknown method"),
    (["sparsify", "--steps", "0"], "--steps must be at least 1"),
    (["sparsify", "--schedule", "gradual"], "needs --steps"),
    (["sparsify", "--schedule", "gradual", "--steps", "5", "--method", "wanda"], "oneshot"),
    (["sparsify", "--schedule", "weekly"], "Unknown schedule"),
    (["sensitivity", "--sparsity", "0"], "(0, 1)"),
    (["quantize", "--runs", "0"], "--runs"),
])
def test_bad_input_is_one_line_and_exit_2(argv, words, tmp_path, capsys):
    extra = [] if argv[0] == "sensitivity" else ["--out", str(tmp_path / "x")]
    code = main([*argv, *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
