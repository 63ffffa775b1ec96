"""Numbers checked at the door (item 4) and a fast, honest start-up (item 7)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.cli import main
from sentinel.errors import ModelLoadError
from sentinel.models import load_model, save_model
from sentinel.models.hub import hub_reachable
from tests.conftest import make_tiny_lm

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["prune", "analyze", "evaluate", "generate", "finetune", "benchmark", "build-demo-model", "jobs"]


@pytest.fixture(scope="module")
def model_and_text(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edges")
    model, tokenizer = make_tiny_lm()
    saved = save_model(model, tokenizer, folder / "m")
    text = folder / "c.txt"
    text.write_text("Return the value of the attribute named by the string. " * 40, encoding="utf-8")
    return str(saved), str(text)


EDGES = [
    (["analyze", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["analyze", "--seq-len", "0"], "--seq-len must be at least 1"),
    (["evaluate", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["evaluate", "--seq-len", "0"], "--seq-len must be at least 2"),
    (["evaluate", "--seq-len", "32", "--stride", "40"], "longer than the window"),
    (["generate", "--prompt", "a", "--temperature", "nan"], "finite number"),
    (["generate", "--prompt", "a", "--temperature", "inf"], "finite number"),
    (["generate", "--prompt", "a", "--temperature", "0"], "temperature must be > 0"),
    (["generate", "--prompt", "a", "--top-p", "0"], "top_p must be in (0, 1]"),
    (["generate", "--prompt", "a", "--top-p", "1.5"], "top_p must be in (0, 1]"),
    (["generate", "--prompt", "a", "--top-p", "nan"], "top_p must be in (0, 1]"),
]


@pytest.mark.parametrize("args,message", EDGES, ids=[" ".join(a) for a, _ in EDGES])
def test_bad_numbers_are_one_line_exit_2(model_and_text, capsys, args, message):
    model, text = model_and_text
    extra = ["--text", text] if args[0] in ("analyze", "evaluate") else []
    assert main([args[0], "--model", model, "--device", "cpu", *extra, *args[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_model_with_every_head_removed_is_one_clear_error(model_and_text, tmp_path, capsys):
    model, text = model_and_text
    every = ";".join(f"{layer}:0,1,2,3" for layer in range(2))
    assert main(["prune", "--model", model, "--device", "cpu", "--heads", every, "--min-heads", "0",
                 "--out", str(tmp_path / "none")]) == 0
    capsys.readouterr()
    assert main(["analyze", "--model", str(tmp_path / "none"), "--device", "cpu", "--text", text,
                 "--samples", "2", "--seq-len", "16"]) == 2
    assert "Every head" in capsys.readouterr().err


def test_a_model_with_every_head_masked_reports_null_scores(model_and_text, tmp_path, capsys):
    model, text = model_and_text
    every = ";".join(f"{layer}:0,1,2,3" for layer in range(2))
    assert main(["prune", "--model", model, "--device", "cpu", "--heads", every, "--min-heads", "0",
                 "--mode", "mask", "--out", str(tmp_path / "masked")]) == 0
    capsys.readouterr()
    assert main(["analyze", "--model", str(tmp_path / "masked"), "--device", "cpu", "--text", text,
                 "--samples", "2", "--seq-len", "16", "--metrics", "entropy,magnitude", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["magnitude"] == [[None] * 4, [None] * 4]


HELP_CHECK = """
import sys
from sentinel.cli import build_parser, main
args = sys.argv[1:]
try:
    build_parser().parse_args(args)
except SystemExit:
    pass
assert main(["prune", "--bogus"]) == 2          # an argument error
assert main(["jobs", "frobnicate"]) == 2
print("torch" in sys.modules, "transformers" in sys.modules)
"""


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_and_argument_errors_do_not_import_torch(command):
    args = [command, "--help"] if command else ["--help"]
    done = subprocess.run([sys.executable, "-c", HELP_CHECK, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"


def test_python_m_sentinel_help_exits_0():
    done = subprocess.run([sys.executable, "-m", "sentinel", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "jobs" in done.stdout


def test_an_offline_hub_id_is_one_line_without_retries(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
    with pytest.raises(ModelLoadError, match="cannot be reached") as err:
        load_model("someorg/not-cached-anywhere", device="cpu")
    assert "\n" not in str(err.value)


def test_hub_check_sees_an_unreachable_endpoint(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")   # the discard port: nothing listens there
    assert hub_reachable(timeout=2.0) is False
