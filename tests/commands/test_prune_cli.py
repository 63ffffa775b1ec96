"""`sentinel prune --heads`: JSON shape, saved result, and one-line exit-2 errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sentinel import load_model, present_heads
from sentinel.cli import main


def test_prune_remove_json(tiny_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    code = main(["prune", "--model", str(tiny_gpt2_dir), "--heads", "0:1,3;2:0", "--mode", "remove",
                 "--out", str(out), "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pruned"] == {"0": [1, 3], "2": [0]}
    assert result["out"] == str(out.resolve())
    # 3 heads of head_dim 8 leave: Q,K,V rows (3 x 8 x 32 weights + 3 x 8 biases) and O columns (8 x 32)
    assert result["params_before"] - result["params_after"] == 3 * (3 * 8 * 32 + 3 * 8 + 8 * 32)
    assert present_heads(load_model(out, device="cpu").model)[0] == [0, 2]


def test_prune_mask_keeps_parameters(tiny_gpt2_dir, tmp_path, capsys):
    code = main(["prune", "--model", str(tiny_gpt2_dir), "--heads", "1:2", "--mode", "mask",
                 "--out", str(tmp_path / "m"), "--device", "cpu", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["params_before"] == result["params_after"]


@pytest.mark.parametrize("heads, words", [
    ("0:9", "heads 0-3"),
    ("7:0", "layers 0-2"),
    ("zero:1", "not an integer"),
    ("0-1", "layer:head"),
])
def test_bad_plan_is_one_line_and_exit_2(tiny_gpt2_dir, tmp_path, capsys, heads, words):
    code = main(["prune", "--model", str(tiny_gpt2_dir), "--heads", heads, "--out", str(tmp_path / "x"),
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_unreadable_model_is_exit_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel", "prune", "--model", str(tmp_path / "missing"), "--heads", "0:1",
         "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "No model folder" in proc.stderr
