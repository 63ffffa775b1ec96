"""Every bad file is one clear error (issue 9, item 3): a specific SentinelError in the library, one line and
exit 2 in the CLI; anything unexpected is one line and exit 1, with the traceback only under --debug."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sentinel.cli import main
from sentinel.errors import CorruptModelError
from sentinel.models import load_model, save_model
from sentinel.store import Store, StoreError
from tests.conftest import make_char_tokenizer, make_tiny_model


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "m"
    model = make_tiny_model("gpt2")
    model.config.eos_token_id = model.config.bos_token_id = model.config.pad_token_id = 0
    model.save_pretrained(folder, safe_serialization=True)
    make_char_tokenizer().save_pretrained(folder)
    return folder


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _broken(hf_folder: Path, tmp_path: Path, how: str) -> Path:
    folder = shutil.copytree(hf_folder, tmp_path / how)
    if how == "truncated":
        _truncate(folder / "model.safetensors")
    elif how == "garbage":
        (folder / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    elif how == "shapes":
        config = json.loads((folder / "config.json").read_text())
        config["n_embd"] = 48
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "tokenizer":
        (folder / "tokenizer.json").write_text('{"version": ')
    return folder


@pytest.mark.parametrize("how", ["truncated", "garbage", "shapes", "tokenizer"])
def test_bad_model_files_are_one_clear_error(hf_folder, tmp_path, capsys, how):
    folder = _broken(hf_folder, tmp_path, how)
    with pytest.raises(CorruptModelError):
        load_model(folder, device="cpu")
    capsys.readouterr()
    assert main(["generate", "--model", str(folder), "--device", "cpu", "--prompt", "a"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err


def test_truncated_weights_of_a_sentinel_model(tmp_path):
    model = make_tiny_model("gpt2")
    model.config.eos_token_id = model.config.bos_token_id = model.config.pad_token_id = 0
    folder = save_model(model, make_char_tokenizer(), tmp_path / "m")
    _truncate(folder / "model.safetensors")
    with pytest.raises(CorruptModelError, match="truncated or corrupt"):
        load_model(folder, device="cpu")


@pytest.mark.parametrize("content", [b"garbage " * 1000, b"SQLite format 3\x00" + b"\xff" * 5000])
def test_garbage_store_is_one_clear_error(tmp_path, monkeypatch, capsys, content):
    (tmp_path / "sentinel.db").write_bytes(content)
    with pytest.raises(StoreError, match="corrupt or not a Sentinel store"):
        Store(tmp_path / "sentinel.db")
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    assert main(["jobs", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sentinel.db.broken" in err
    assert (tmp_path / "sentinel.db").read_bytes() == content   # left as it was for the user to inspect


def test_unexpected_errors_are_one_line_exit_1_and_debug_shows_the_traceback(monkeypatch, capsys):
    import sentinel.commands.jobs as jobs_command

    def crash(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(jobs_command, "run", crash)   # register() binds the module's run when the parser is built
    assert main(["jobs", "list"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: unexpected ZeroDivisionError: division by zero "
                                        "(run with --debug for the traceback)"]
    for args in (["--debug", "jobs", "list"], ["jobs", "list", "--debug"]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and err.strip().endswith("for the traceback)")
