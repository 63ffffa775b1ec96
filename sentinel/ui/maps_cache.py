"""Head-map scores kept on disk between app restarts, keyed by fingerprints of the model, its pruning and the text.

A restart (or a second process) then draws the bundled model's first map from the cache instead of
running the model again. The key covers everything the scores depend on: the model folder's weight files
(name, size, modification time), the device and dtype, the session's pruning steps, the sample text's
digest and the sampling settings. Hub models (no local folder) are not cached. Files are JSON, written
atomically under $SENTINEL_HOME/cache/maps/; a damaged file is reported and recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from sentinel.metrics.scores import HeadScores
from sentinel.store import sentinel_home
from sentinel.ui.analysis import HeadMaps

logger = logging.getLogger(__name__)

CACHE_FOLDER = Path("cache") / "maps"
WEIGHT_SUFFIXES = (".safetensors", ".json")


def cache_dir() -> Path:
    return sentinel_home() / CACHE_FOLDER


def maps_fingerprint(source: str, device: str, dtype: str, steps: list[dict[str, Any]], text_digest: str,
                     samples: int, seq_len: int) -> str | None:
    """A stable key for scores of this model, pruning and text; None when the model has no local folder."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return None
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                   if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    payload = json.dumps({"folder": str(folder.resolve()), "files": files, "device": device, "dtype": dtype,
                          "steps": steps, "text": text_digest, "samples": samples, "seq_len": seq_len},
                         sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def load_cached_maps(key: str, model_version: int) -> HeadMaps | None:
    """The cached scores for `key` (None if none or unreadable; an unreadable file is logged and ignored)."""
    path = cache_dir() / f"{key}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        scores = {name: HeadScores.from_dict(value) for name, value in data["scores"].items()}
        return HeadMaps(scores, model_version, data["text"], int(data["tokens"]), 0.0)
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("Ignoring the damaged head-map cache %s (%s); the maps are computed again.", path, error)
        return None


def save_cached_maps(key: str, maps: HeadMaps) -> Path:
    """Write the scores atomically (a temporary file renamed over the target)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    data = {"scores": {name: s.to_dict() for name, s in maps.scores.items()}, "text": maps.text,
            "tokens": maps.tokens}
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".maps-", suffix=".partial")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(data, out)
    target = folder / f"{key}.json"
    os.replace(temporary, target)
    return target
