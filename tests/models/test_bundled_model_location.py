"""The bundled model is found through SENTINEL_BUNDLED_MODEL or the repository's assets/, never by guessing."""

from __future__ import annotations

import pytest

from sentinel.errors import ModelLoadError
from sentinel.models import bundled, loading
from sentinel.models.loading import BUNDLED_MODEL_ENV, bundled_model_dir, load_model


def test_the_setting_names_the_bundled_model(tiny_lm_dir, monkeypatch):
    monkeypatch.setenv(BUNDLED_MODEL_ENV, str(tiny_lm_dir))     # read on every call, not only at import
    assert bundled_model_dir() == tiny_lm_dir
    loaded = load_model(None, device="cpu")
    assert loaded.source == str(tiny_lm_dir) and loaded.model.config.n_layer == 2


def test_a_setting_without_a_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(BUNDLED_MODEL_ENV, str(tmp_path))
    with pytest.raises(ModelLoadError, match="SENTINEL_BUNDLED_MODEL is .* holds no model"):
        load_model(None)


def test_an_installed_package_without_assets_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv(BUNDLED_MODEL_ENV, raising=False)
    monkeypatch.setattr(bundled, "REPOSITORY_MODEL_DIR", tmp_path / "site-packages" / "assets" / "models" / "x")
    with pytest.raises(ModelLoadError, match="Set SENTINEL_BUNDLED_MODEL to a model folder"):
        load_model(None)


def test_a_source_checkout_defaults_to_its_assets(monkeypatch):
    monkeypatch.delenv(BUNDLED_MODEL_ENV, raising=False)
    assert bundled_model_dir() == bundled.REPOSITORY_MODEL_DIR
    assert (bundled_model_dir() / "config.json").is_file()
