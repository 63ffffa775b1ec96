"""Measured CPU speed of a dense model against its sparse / int8 versions, interleaved, with a plain verdict.

Dense kernels multiply zeros like any other number, so an unstructured-sparse model saved as dense
weights runs at the dense speed; the verdict says so when the measured ratio shows no gain.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from sentinel.evaluation.speed import measure_speed

logger = logging.getLogger(__name__)

NOISE = 0.05        # ratios within ±5% of 1 are reported as "no measurable difference"


@dataclass
class SpeedRow:
    name: str
    prefill_tokens_per_s: float         # median over repeats
    decode_tokens_per_s: float
    prefill_spread: tuple[float, float]  # min, max over repeats
    decode_spread: tuple[float, float]
    prefill_ratio: float                 # vs the first (reference) model; > 1 is faster
    decode_ratio: float
    verdict: str
    prefill_runs: list[float]            # every repeat, tokens/s, in the order taken
    decode_runs: list[float]


@dataclass
class SpeedComparison:
    rows: list[SpeedRow]
    repeats: int
    prompt_tokens: int
    new_tokens: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}


def verdict(prefill_ratio: float, decode_ratio: float, prefill_clear: bool = True, decode_clear: bool = True) -> str:
    """Plain words for two speed ratios against the reference; `*_clear` says the repeat ranges do not overlap.

    A ratio counts as faster/slower only beyond ±5% and with non-overlapping interquartile ranges of the
    repeats (robust to a single load spike on a shared machine); otherwise it is reported as noise.
    """
    def word(ratio: float, clear: bool) -> str:
        if ratio > 1 + NOISE and clear:
            return f"{ratio:.2f}x faster"
        if ratio < 1 - NOISE and clear:
            return f"{1 / ratio:.2f}x slower"
        return "no measurable speed-up"
    return f"prefill {word(prefill_ratio, prefill_clear)}, decode {word(decode_ratio, decode_clear)}"


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def _apart(a: list[float], b: list[float]) -> bool:
    """True when the interquartile ranges of the two sets of repeats do not overlap."""
    (a1, a3), (b1, b3) = _quartiles(a), _quartiles(b)
    return a1 > b3 or a3 < b1


def compare_speed(models: Mapping[str, nn.Module], tokenizer: Any = None, repeats: int = 5, prompt_tokens: int = 128,
                  new_tokens: int = 32) -> SpeedComparison:
    """Time every model `repeats` times, interleaved with the order rotating each round (A B C, B C A, C A B ...)
    so neither load drifts nor position favour one model; one warm-up each; the first model is the reference."""
    import torch

    names = list(models)
    for name in names:                                  # warm-up
        measure_speed(models[name], tokenizer, prompt_tokens, new_tokens, runs=1, warmup=0)
    prefill: dict[str, list[float]] = {n: [] for n in names}
    decode: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            r = measure_speed(models[name], tokenizer, prompt_tokens, new_tokens, runs=1, warmup=0)
            prefill[name].append(r.prefill_tokens_per_s)
            decode[name].append(r.decode_tokens_per_s)
    ref_p, ref_d = statistics.median(prefill[names[0]]), statistics.median(decode[names[0]])
    rows = []
    for name in names:
        p, d = statistics.median(prefill[name]), statistics.median(decode[name])
        rows.append(SpeedRow(name, p, d, (min(prefill[name]), max(prefill[name])),
                             (min(decode[name]), max(decode[name])), p / ref_p, d / ref_d,
                             "reference" if name == names[0] else
                             verdict(p / ref_p, d / ref_d, _apart(prefill[name], prefill[names[0]]),
                                     _apart(decode[name], decode[names[0]])),
                             prefill[name], decode[name]))
    return SpeedComparison(rows, repeats, prompt_tokens, new_tokens, torch.get_num_threads())
