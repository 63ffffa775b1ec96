"""`sentinel finetune`: a real run on a tiny model, its record, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.cli import main
from sentinel.models import load_model
from sentinel.pruning import masked_heads
from sentinel.store import Store

REPO = Path(__file__).resolve().parents[2]
TINY = ["--block-size", "32", "--batch-size", "4", "--eval-tokens", "64", "--lr", "5e-3", "--device", "cpu"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_finetune_trains_saves_and_records(tiny_lm_dir, tiny_text_file, tmp_path, capsys):
    out = tmp_path / "tuned"
    code = main(["finetune", "--model", str(tiny_lm_dir), "--text", str(tiny_text_file), "--steps", "3",
                 "--heads", "0:1", *TINY, "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state"] == "succeeded" and summary["steps"] == 3 and summary["stopped"] == "completed"
    assert summary["model"] == str(out / "model")
    assert masked_heads(load_model(out / "model", device="cpu").model) == {0: [1]}
    assert json.loads((out / "result.json").read_text())["steps"] == 3
    [record] = Store().list_experiments()
    assert record.kind == "finetune" and record.config["steps"] == 3 and record.status == "completed"
    assert [p.step for p in Store().get_curves(record.id)["loss"]] == [1, 2, 3]


def test_finetune_with_distillation_prints_a_summary(tiny_lm_dir, tiny_text_file, tmp_path, capsys):
    code = main(["finetune", "--model", str(tiny_lm_dir), "--text", str(tiny_text_file), "--steps", "2",
                 "--distill", "--heads", "1:0,2", *TINY, "--out", str(tmp_path / "d")])
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("fine-tuned 2 steps (completed): validation perplexity ")
    assert line.endswith(f"saved to {tmp_path / 'd' / 'model'}")


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--steps", "2", "--lr", "0"], "learning_rate must be > 0"),
    (["--steps", "2", "--heads", "0-1"], "Cannot read"),
    (["--steps", "2", "--text", "missing.txt"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, tiny_lm_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["finetune", "--model", str(tiny_lm_dir), *TINY, *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_unwritable_output_folder_is_refused(tiny_lm_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["finetune", "--model", str(tiny_lm_dir), "--steps", "2", *TINY, "--out", str(blocker / "out")])
    assert code == 2
    assert "Cannot create the output folder" in capsys.readouterr().err


def test_python_dash_m_sentinel_training_is_the_same_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sentinel.training", "--steps", "0", "--out", str(tmp_path / "o")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --steps must be at least 1, got 0."


@pytest.mark.slow
def test_torchrun_runs_the_same_entry_point_on_two_processes(tiny_lm_dir, tiny_text_file, tmp_path, home):
    """Two CPU processes (gloo): the Trainer trains data-parallel; only rank 0 records and saves."""
    out = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "sentinel", "finetune",
         "--model", str(tiny_lm_dir), "--text", str(tiny_text_file), "--steps", "2", "--heads", "0:1", *TINY,
         "--out", str(out), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "SENTINEL_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["steps"] == 2 and summary["model"] == str(out / "model")
    assert masked_heads(load_model(out / "model", device="cpu").model) == {0: [1]}
    [record] = Store().list_experiments()
    assert [p.step for p in Store().get_curves(record.id)["loss"]] == [1, 2]
