"""Where the bundled demo model lives. Standard library only (no torch), so the dashboard can find the
bundled model's cached maps before torch and transformers are imported."""

from __future__ import annotations

import os
from pathlib import Path

from sentinel.errors import ModelLoadError

BUNDLED_MODEL_NAME = "stories-gpt2"  # the default model; assets/models/stdlib-gpt2 stays bundled beside it
BUNDLED_MODEL_ENV = "SENTINEL_BUNDLED_MODEL"   # the documented setting: the folder holding the bundled model
# Where a source checkout keeps it. Only a default: an installed (non-editable) package has no assets/ beside it.
REPO_ROOT = Path(__file__).resolve().parents[2]
REPOSITORY_MODEL_DIR = REPO_ROOT / "assets" / "models" / BUNDLED_MODEL_NAME


def bundled_model_dir() -> Path:
    """The bundled demo model's folder: $SENTINEL_BUNDLED_MODEL when set, else the repository's
    assets/models/<BUNDLED_MODEL_NAME> when this is a source checkout that has it; else a ModelLoadError saying how to
    get one. Read on every call, so setting the variable after import works."""
    configured = os.environ.get(BUNDLED_MODEL_ENV)
    if configured:
        folder = Path(configured).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{BUNDLED_MODEL_ENV} is {configured}, which holds no model (no config.json); point "
                                 "it at a model folder, e.g. one built by `sentinel build-demo-model --out DIR`.")
        return folder
    if (REPOSITORY_MODEL_DIR / "config.json").is_file():
        return REPOSITORY_MODEL_DIR
    raise ModelLoadError(f"No bundled model: this installation has no {REPOSITORY_MODEL_DIR} (it ships with the "
                         f"source repository). Set {BUNDLED_MODEL_ENV} to a model folder (build one with "
                         "`sentinel build-demo-model --out DIR`), or give a model path or hub id.")


# Kept for callers that name the path (the dashboard, tests): the setting at import time, else the repository's.
BUNDLED_MODEL_DIR = Path(os.environ.get(BUNDLED_MODEL_ENV) or REPOSITORY_MODEL_DIR).expanduser()
