"""Head-map scores survive a restart on disk, keyed by model, pruning and text; damaged files are recomputed."""

from __future__ import annotations

import math

import torch

from sentinel.metrics.scores import HeadScores
from sentinel.ui.analysis import HeadMaps
from sentinel.ui.maps_cache import cache_dir, load_cached_maps, maps_fingerprint, save_cached_maps


def test_scores_round_trip_and_the_key_follows_what_they_depend_on(tmp_path, monkeypatch, tiny_lm_dir):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    key = maps_fingerprint(str(tiny_lm_dir), "auto", "auto", [], "abc", 8, 128)
    assert key == maps_fingerprint(str(tiny_lm_dir), "auto", "auto", [], "abc", 8, 128)
    step = [{"mode": "mask", "heads": {"0": [1]}, "how": "x", "strategy": None, "ratio": None}]
    others = {maps_fingerprint(str(tiny_lm_dir), "auto", "auto", step, "abc", 8, 128),
              maps_fingerprint(str(tiny_lm_dir), "auto", "auto", [], "abd", 8, 128),
              maps_fingerprint(str(tiny_lm_dir), "cpu", "auto", [], "abc", 8, 128),
              maps_fingerprint(str(tiny_lm_dir), "auto", "auto", [], "abc", 4, 128)}
    assert key not in others and len(others) == 4
    assert maps_fingerprint("gpt2", "auto", "auto", [], "abc", 8, 128) is None     # a hub id: not cached
    scores = HeadScores("entropy", torch.tensor([[0.5, math.nan], [1.0, 2.0]], dtype=torch.float64))
    save_cached_maps(key, HeadMaps({"entropy": scores}, 3, "bundled:validation", 1024, 0.4))
    loaded = load_cached_maps(key, 7)
    assert loaded.model_version == 7 and loaded.tokens == 1024 and loaded.text == "bundled:validation"
    assert torch.equal(loaded.scores["entropy"].values.isnan(), scores.values.isnan())
    assert loaded.scores["entropy"].values[1].tolist() == [1.0, 2.0]
    (cache_dir() / f"{key}.json").write_text("{not json")
    assert load_cached_maps(key, 7) is None
    assert load_cached_maps("missing", 0) is None
