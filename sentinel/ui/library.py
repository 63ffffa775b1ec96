"""Saved models under the data folder: where the dashboard saves pruned models and how it finds them again."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from sentinel.errors import SentinelError
from sentinel.store import sentinel_home

MODELS_FOLDER = "models"
EXPORTS_FOLDER = "exports"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def models_dir() -> Path:
    """$SENTINEL_HOME/models: the folder saved pruned models go to."""
    return sentinel_home() / MODELS_FOLDER


def saved_models(root: Path | None = None) -> list[Path]:
    """Model folders saved under the data folder (those holding a config.json), newest first; `root` lists
    another folder of the library instead (e.g. `exports_dir()`)."""
    root = models_dir() if root is None else root
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def model_folder_for(name: str) -> Path:
    """The folder a model named `name` is saved to; names are plain words so nothing escapes the data folder."""
    if not _NAME.match(name):
        raise SentinelError(f"{name!r} is not a usable name: use letters, digits, '.', '_' or '-' "
                            "(up to 64 characters, starting with a letter or digit).")
    return models_dir() / name


def exports_dir() -> Path:
    """$SENTINEL_HOME/exports: the folder stock (plain transformers) checkpoints are exported to."""
    return sentinel_home() / EXPORTS_FOLDER


def export_folder_for(name: str) -> Path:
    """The folder a stock checkpoint named `name` is exported to (same naming rules as saved models)."""
    return exports_dir() / model_folder_for(name).name


def zip_folder(folder: Path) -> bytes:
    """The folder's files as a zip archive in memory (for the download button), under the folder's name."""
    if not folder.is_dir():
        raise SentinelError(f"{folder} does not exist; save the model first.")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    return buffer.getvalue()
