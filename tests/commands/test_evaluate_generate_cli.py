"""`sentinel evaluate` / `sentinel generate`: JSON shape, determinism, and one-line exit-2 errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from sentinel.cli import main

EVALUATE_KEYS = {"perplexity", "tokens_evaluated", "window_length", "parameters", "prefill_tokens_per_s",
                 "decode_tokens_per_s"}


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("Return the value of the attribute named by the string. " * 12)
    return path


def test_evaluate_json_shape(tiny_lm_dir, text_file, capsys):
    code = main(["evaluate", "--model", str(tiny_lm_dir), "--text", str(text_file), "--seq-len", "32",
                 "--runs", "1", "--new-tokens", "4", "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert EVALUATE_KEYS <= set(result)
    assert result["window_length"] == 32 and result["tokens_evaluated"] > 0 and result["perplexity"] > 1


def test_evaluate_sliding_window_scores_every_token_once(tiny_lm_dir, text_file, capsys):
    main(["evaluate", "--model", str(tiny_lm_dir), "--text", str(text_file), "--seq-len", "32", "--runs", "1",
          "--new-tokens", "4", "--device", "cpu", "--json"])
    plain = json.loads(capsys.readouterr().out)
    main(["evaluate", "--model", str(tiny_lm_dir), "--text", str(text_file), "--seq-len", "32", "--stride", "16",
          "--runs", "1", "--new-tokens", "4", "--device", "cpu", "--json"])
    sliding = json.loads(capsys.readouterr().out)
    assert sliding["stride"] == 16 and sliding["tokens_evaluated"] >= plain["tokens_evaluated"]


@pytest.mark.parametrize("extra, words", [
    (["--text", "missing.txt"], "does not exist"),
    (["--dataset", "sentinel-no-such-dataset:x:test"], "not available locally"),
    (["--text", "a.txt", "--dataset", "x:y:z"], "not allowed with"),
    (["--text", "TEXT", "--seq-len", "500"], "positions"),
    (["--text", "TEXT", "--max-tokens", "1"], "--max-tokens"),
])
def test_evaluate_bad_input_exit_2(tiny_lm_dir, text_file, extra, words, capsys):
    extra = [str(text_file) if item == "TEXT" else item for item in extra]
    code = main(["evaluate", "--model", str(tiny_lm_dir), "--device", "cpu", *extra])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # transformers may draw a loading bar before it
    assert code == 2 and last.startswith("error: ") and words in last


def test_evaluate_binary_file_exit_2(tiny_lm_dir, tmp_path, capsys):
    (tmp_path / "b.txt").write_bytes(b"\x00\x01\x02")
    assert main(["evaluate", "--model", str(tiny_lm_dir), "--text", str(tmp_path / "b.txt")]) == 2
    assert "NUL" in capsys.readouterr().err


def test_generate_json_deterministic(tiny_lm_dir, capsys):
    argv = ["generate", "--model", str(tiny_lm_dir), "--prompt", "Return the", "--max-new-tokens", "8",
            "--seed", "5", "--device", "cpu", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["text"] == second["text"] and first["new_tokens"] == 8 and first["prompt"] == "Return the"


def test_generate_bad_input_exit_2(tiny_lm_dir, capsys):
    assert main(["generate", "--model", str(tiny_lm_dir), "--prompt", "x", "--temperature", "0"]) == 2
    assert "temperature" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_lm_dir)]) == 2
    assert "--prompt" in capsys.readouterr().err


def test_generate_subprocess(tiny_lm_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "sentinel", "generate", "--model", str(tiny_lm_dir), "--prompt",
                          "Create a", "--greedy", "--max-new-tokens", "5", "--json"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["new_tokens"] == 5


def test_evaluate_bundled_defaults(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        code = main(["evaluate", "--max-tokens", "1024", "--runs", "1", "--new-tokens", "4", "--threads", "1", "--json"])
    finally:
        torch.set_num_threads(threads)  # --threads sets a process-wide value; give the other tests theirs back
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == "bundled:validation" and result["window_length"] == 256
    assert result["tokens_evaluated"] == 1024 - 4 and math.isfinite(result["perplexity"])
    assert result["threads"] == 1
