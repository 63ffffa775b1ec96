"""The dashboard does not let a visitor probe the server's disk or see its paths (issue 9, items 3 and 8)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sentinel.errors import ForbiddenPathError
from sentinel.store import StoreError
from sentinel.files import allowed_model_roots, check_allowed_folder, check_hub_id, redact_server_paths
from sentinel.ui.format import plain_error

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def roots(tmp_path, monkeypatch):
    home, extra = tmp_path / "home", tmp_path / "extra"
    (home / "models" / "m").mkdir(parents=True)
    extra.mkdir()
    monkeypatch.setenv("SENTINEL_HOME", str(home))
    monkeypatch.setenv("SENTINEL_MODEL_ROOTS", str(extra))
    return home, extra


def test_folders_under_the_allowed_roots_open(roots):
    home, extra = roots
    assert allowed_model_roots() == [home.resolve(), REPO / "assets" / "models", extra.resolve()]
    assert check_allowed_folder(home / "models" / "m") == (home / "models" / "m").resolve()
    assert check_allowed_folder(extra / "not-yet") == (extra / "not-yet").resolve()
    assert check_allowed_folder(REPO / "assets" / "models" / "stdlib-gpt2").is_relative_to(REPO)


def test_every_other_path_gets_the_same_message_whether_it_exists_or_not(roots, tmp_path):
    home, _ = roots
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / "escape").symlink_to(outside)
    messages = set()
    for path in ["/etc", "/nonexistent/model", str(outside), str(home / ".." / "outside"), str(home / "escape"),
                 "", "~"]:
        with pytest.raises(ForbiddenPathError) as err:
            check_allowed_folder(path)
        messages.add(str(err.value))
    assert len(messages) == 1 and "SENTINEL_MODEL_ROOTS" in messages.pop()


def test_visitor_messages_name_no_server_folder(roots):
    home, _ = roots
    message = plain_error(StoreError(f"The store {home.resolve() / 'sentinel.db'} cannot be read."), "loading")
    assert str(home) not in message and "<data folder>/sentinel.db" in message
    assert redact_server_paths(f"{REPO}/assets/models/x") == "<app folder>/assets/models/x"
    os_message = plain_error(PermissionError(13, "Permission denied", "/srv/secret/sentinel.db"), "saving")
    assert os_message == "Could not finish saving: Permission denied."


def test_the_shipped_streamlit_config_shows_no_error_details():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"


def test_the_hub_id_field_takes_hub_ids_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2-local").mkdir()
    assert check_hub_id(" gpt2 ") == "gpt2" and check_hub_id("org/model-1.5") == "org/model-1.5"
    messages = set()
    for text in ["/etc", "../secrets", "~", "a/b/c", "gpt2-local", "org/..", ""]:
        with pytest.raises(ForbiddenPathError) as err:
            check_hub_id(text)
        messages.add(str(err.value))
    assert len(messages) == 1
