"""Honest speed (the dashboard, `sentinel compress`): base and pruned model timed in turns, shown as a ratio with its spread,
next to the speed-up the removed matrix-multiply FLOPs predict and the exact parameter and byte change.

One timing of each model is noise on a shared machine, so `compare_speed` alternates the two models
(`sentinel.evaluation.speed.measure_speed`, one run each, `repeats` times) and reports the median of the
per-pair ratios with their range. When the range covers 1.0 the verdict is "no measurable difference".
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from sentinel.errors import DataError
from sentinel.evaluation.size import parameter_count, weight_bytes
from sentinel.evaluation.speed import measure_speed
from sentinel.models.heads import model_heads

logger = logging.getLogger(__name__)

SPEED_REPEATS = 5


@dataclass(frozen=True)
class SpeedRatio:
    """pruned ÷ base throughput: the median over interleaved pairs and the lowest and highest pair."""

    median: float
    low: float
    high: float
    pairs: int

    @property
    def measurable(self) -> bool:
        """False when the spread covers 1.0 (the pairs disagree on which model is faster)."""
        return not (self.low <= 1.0 <= self.high)

    def describe(self) -> str:
        """'1.21× faster (1.12–1.30×, 5 pairs)' or 'no measurable difference (0.93–1.08×, 5 pairs)'."""
        spread = f"{self.low:.2f}–{self.high:.2f}×, {self.pairs} interleaved pairs"
        if not self.measurable:
            return f"no measurable difference ({spread})"
        word = "faster" if self.median > 1 else "slower"
        return f"{self.median:.2f}× {word} ({spread})"


@dataclass(frozen=True)
class SpeedComparison:
    """Measured prefill and generation ratios (None when not measured) beside the exact size change and the
    FLOP prediction."""

    prefill: SpeedRatio | None
    decode: SpeedRatio | None
    predicted_speedup: float
    base_params: int
    pruned_params: int
    base_bytes: int
    pruned_bytes: int
    removed_heads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matmul_flops_per_token(model: nn.Module, context: int = 128) -> int:
    """Forward FLOPs per token: 2 per weight of every linear layer (LM head included, embedding lookups not)
    plus the attention scores and mix, 4 × context × (present heads × head size) per layer.

    Masked heads are still present (their output is multiplied by 0), so masking never lowers this count.
    """
    from transformers.pytorch_utils import Conv1D

    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, Conv1D)))
    heads = model_heads(model)
    attention = sum(4 * context * len(heads.present(layer)) * heads.head_dim for layer in range(heads.num_layers))
    return 2 * weights + attention


def removed_head_count(model: nn.Module) -> int:
    """Heads physically removed from the weights (masked heads do not count)."""
    heads = model_heads(model)
    return sum(heads.num_heads - len(heads.present(layer)) for layer in range(heads.num_layers))


def compare_speed(base: nn.Module, pruned: nn.Module, tokenizer: Any, repeats: int = SPEED_REPEATS,
                  prompt_tokens: int = 64, new_tokens: int = 16, measure: bool | None = None) -> SpeedComparison:
    """Size change, FLOP prediction, and (when heads were removed, or `measure` is True) interleaved timings."""
    if repeats < 2:
        raise DataError("compare_speed needs at least 2 repeats to show a spread.")
    removed = removed_head_count(pruned)
    predicted = matmul_flops_per_token(base) / matmul_flops_per_token(pruned)
    prefill = decode = None
    smaller = parameter_count(pruned) < parameter_count(base)         # heads, neurons or layers removed
    if measure if measure is not None else smaller:
        for model in (base, pruned):                       # one untimed warm-up each
            measure_speed(model, tokenizer, prompt_tokens, new_tokens, runs=1, warmup=0)
        prefill_ratios, decode_ratios = [], []
        for index in range(repeats):
            # alternate which model goes first, so a drift in machine load hits both alike
            order = (base, pruned) if index % 2 == 0 else (pruned, base)
            timed = {id(m): measure_speed(m, tokenizer, prompt_tokens, new_tokens, runs=1, warmup=0) for m in order}
            before, after = timed[id(base)], timed[id(pruned)]
            prefill_ratios.append(after.prefill_tokens_per_s / before.prefill_tokens_per_s)
            decode_ratios.append(after.decode_tokens_per_s / before.decode_tokens_per_s)
        prefill, decode = _ratio(prefill_ratios), _ratio(decode_ratios)
        logger.info("Speed ratio: prefill %s, decode %s", prefill.describe(), decode.describe())
    return SpeedComparison(prefill, decode, predicted, parameter_count(base), parameter_count(pruned),
                           weight_bytes(base), weight_bytes(pruned), removed)


def _ratio(values: list[float]) -> SpeedRatio:
    return SpeedRatio(statistics.median(values), min(values), max(values), len(values))
