"""Head-map scores kept on disk between app restarts, keyed by fingerprints of the model, its pruning and the text.

A restart (or a second process) then draws the bundled model's first map from the cache instead of
running the model again. The key covers everything the scores depend on: the model folder's weight files
(name, size, modification time), the device and dtype, the session's pruning steps, the sample text's
digest and the sampling settings. Hub models (no local folder) are not cached. Files are JSON, written
atomically under $SENTINEL_HOME/cache/maps/; a damaged file is reported and recomputed, never trusted.

Importing this module does not import torch: `first_visit_map` reads a new session's first map (the
bundled model, unpruned, the bundled text, the default sampling) while torch and the model still load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentinel.errors import ModelLoadError
from sentinel.models.bundled import bundled_model_dir
from sentinel.store import sentinel_home
from sentinel.ui.choices import MAP_SAMPLES, MAP_SEQ_LEN, ModelChoice, SampleText

if TYPE_CHECKING:
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


def first_visit_key() -> str | None:
    """The key of a new session's maps: the bundled model as the Model page opens it by default (unpruned),
    the bundled text, the default sampling. None when there is no bundled model."""
    try:
        folder = bundled_model_dir()
    except ModelLoadError:
        return None                    # no bundled model: the page says so once it runs its usual path
    choice = ModelChoice()
    return maps_fingerprint(str(folder), choice.device, choice.dtype, [], SampleText().digest, MAP_SAMPLES,
                            MAP_SEQ_LEN)


def read_cached(key: str) -> dict[str, Any] | None:
    """The cached JSON for `key`: {"scores": {metric: HeadScores dict}, "text", "tokens"}; None if none or damaged
    (a damaged file is logged and ignored, and the maps are computed again)."""
    path = cache_dir() / f"{key}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data["scores"], dict) or not isinstance(data["text"], str):
            raise TypeError("scores must be an object and text a string")
        data["tokens"] = int(data["tokens"])
        return data
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("Ignoring the damaged head-map cache %s (%s); the maps are computed again.", path, error)
        return None


def load_cached_maps(key: str, model_version: int) -> HeadMaps | None:
    """The cached scores for `key` as HeadMaps (None if none or unreadable)."""
    from sentinel.metrics.scores import HeadScores        # torch: the full page path only
    from sentinel.ui.analysis import HeadMaps

    data = read_cached(key)
    if data is None:
        return None
    try:
        scores = {name: HeadScores.from_dict(value) for name, value in data["scores"].items()}
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("Ignoring the damaged head-map cache %s (%s); the maps are computed again.", key, error)
        return None
    return HeadMaps(scores, model_version, data["text"], data["tokens"], 0.0)


@dataclass(frozen=True)
class FirstMap:
    """One metric's cached head map for a new session: values[layer][head] (every head scored) and token count."""

    metric: str
    values: list[list[float]]
    tokens: int


def first_visit_map(metric: str) -> FirstMap | None:
    """A new session's cached map of `metric`, read without torch; None on a cache miss (no bundled model,
    model files or text changed, metric never computed) or when some head has no score (a pruned model)."""
    key = first_visit_key()
    data = read_cached(key) if key is not None else None
    if data is None or not isinstance(data["scores"].get(metric), dict):
        return None
    try:
        rows = data["scores"][metric]["values"]
        values = [[float(v) for v in row] for row in rows]
    except (KeyError, TypeError, ValueError):
        return None                    # null (pruned) cells or a damaged entry: the full path decides
    if not values or any(len(row) != len(values[0]) or not all(map(math.isfinite, row)) for row in values):
        return None
    return FirstMap(metric, values, data["tokens"])


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
