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

from sentinel.evaluation.paired import interleaved_speed

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
    """Time every model `repeats` times in interleaved rounds (`sentinel.evaluation.paired.interleaved_speed`:
    the order rotates each round, one warm-up each) and state each against the first (reference) model."""
    timed = interleaved_speed(models, tokenizer, repeats, prompt_tokens, new_tokens)
    reference = timed.timings[0]
    ref_p, ref_d = reference.median("prefill"), reference.median("decode")
    rows = []
    for t in timed.timings:
        p, d = t.median("prefill"), t.median("decode")
        rows.append(SpeedRow(t.name, p, d, t.spread("prefill"), t.spread("decode"), p / ref_p, d / ref_d,
                             "reference" if t is reference else
                             verdict(p / ref_p, d / ref_d, _apart(list(t.prefill), list(reference.prefill)),
                                     _apart(list(t.decode), list(reference.decode))),
                             list(t.prefill), list(t.decode)))
    return SpeedComparison(rows, repeats, prompt_tokens, new_tokens, timed.threads)
