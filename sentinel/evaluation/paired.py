"""Honest speed (the dashboard, `sentinel compress`, the sparsity reports): models timed in turns, shown as ratios
with their spread, next to the speed-up the removed matrix-multiply FLOPs predict and the exact size change.

One timing of each model is noise on a shared machine, so `interleaved_speed` times N models in rounds
(`sentinel.evaluation.speed.measure_speed`, one run each per round, the order rotating every round) and
each model's ratio to the first is the median of its per-round ratios with their range. When the range
covers 1.0 the verdict is "no measurable difference". This is the one speed verdict of the app and the CLI:
`compare_speed` is the two-model case the Prune page and `sentinel compress` use; Compare, Weights,
`sentinel sparsify --report` and `sentinel quantize` read `InterleavedSpeed.ratio` / `.verdict` / `.report`.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import nn

from sentinel.errors import DataError
from sentinel.evaluation.size import parameter_count, weight_bytes
from sentinel.evaluation.speed import measure_speed
from sentinel.models.flops import forward_flops
from sentinel.models.heads import model_heads

logger = logging.getLogger(__name__)

SPEED_REPEATS = 5
NOISY_SPREAD = 2.0       # pairs ranging wider than this factor give no verdict
FLOPS_CONTEXT = 128          # the context the whole-model FLOP prediction is counted at (the app's window)
SPEED_PROMPT_TOKENS = 64     # the dashboard's timed prompt (prefill) length, in tokens
SPEED_NEW_TOKENS = 16        # the dashboard's timed generated (decode) tokens


@dataclass(frozen=True)
class SpeedRatio:
    """pruned ÷ base throughput: the median over interleaved pairs and the lowest and highest pair."""

    median: float
    low: float
    high: float
    pairs: int
    same_shapes: bool = False   # both models compute exactly the same shapes: no difference is possible

    @property
    def noisy(self) -> bool:
        """True when the pairs range over more than NOISY_SPREAD (e.g. 0.22–9.27×): the machine was too busy for
        the timings to say anything, in either direction."""
        return self.pairs >= 2 and self.high > NOISY_SPREAD * self.low

    @property
    def measurable(self) -> bool:
        """False when the spread covers 1.0 (the pairs disagree on which model is faster), is too wide to trust
        (`noisy`), or there is only one pair (no spread at all, as with `sentinel quantize --runs 1`)."""
        return (self.pairs >= 2 and not (self.low <= 1.0 <= self.high) and not self.noisy
                and not self.same_shapes)

    def describe(self) -> str:
        """'1.21× faster (1.12–1.30×, 5 pairs)', 'no measurable difference (0.93–1.08×, 5 pairs)' or 'too noisy to
        conclude — rerun (0.22–9.27×, 5 pairs)'."""
        spread = (f"{self.low:.2f}–{self.high:.2f}×, {self.pairs} interleaved pairs" if self.pairs >= 2
                  else f"{self.median:.2f}× in 1 pair; a spread needs 2 rounds or more")
        if self.same_shapes:
            return (f"no difference expected: the same shapes as the reference, so the measured {self.median:.2f}× "
                    f"is the machine's noise ({spread})")
        if self.noisy:
            return f"too noisy to conclude — rerun on a quieter machine ({spread})"
        if not self.measurable:
            return f"no measurable difference ({spread})"
        word = "faster" if self.median > 1 else "slower"
        return f"{self.median:.2f}× {word} ({spread})"

    @property
    def faster(self) -> bool:
        """True only when every pair agrees the model is faster than the reference."""
        return self.measurable and self.median > 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.describe()}


@dataclass(frozen=True)
class SpeedComparison:
    """Measured prefill and generation ratios (None when not measured) beside the exact size change and the
    FLOP prediction (whole model, LM head included: `forward_flops(..., lm_head=True)` at FLOPS_CONTEXT)."""

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


def removed_head_count(model: nn.Module) -> int:
    """Heads physically removed from the weights (masked heads do not count)."""
    heads = model_heads(model)
    return sum(heads.num_heads - len(heads.present(layer)) for layer in range(heads.num_layers))


Phase = Literal["prefill", "decode"]


@dataclass(frozen=True)
class ModelTimings:
    """One model's throughput in every round, in the order taken (tokens/s)."""

    name: str
    prefill: tuple[float, ...]
    decode: tuple[float, ...]
    shapes: str = ""       # `compute_shapes` of the model timed ("" when not known, e.g. an older result)

    def runs(self, phase: Phase) -> tuple[float, ...]:
        return self.prefill if phase == "prefill" else self.decode

    def median(self, phase: Phase) -> float:
        return statistics.median(self.runs(phase))

    def spread(self, phase: Phase) -> tuple[float, float]:
        """Lowest and highest tokens/s over the rounds."""
        return min(self.runs(phase)), max(self.runs(phase))


@dataclass(frozen=True)
class InterleavedSpeed:
    """N models timed in the same rounds; the first is the reference every ratio is taken against."""

    timings: tuple[ModelTimings, ...]
    repeats: int
    prompt_tokens: int
    new_tokens: int
    threads: int

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.timings]

    def of(self, name: str) -> ModelTimings:
        for timing in self.timings:
            if timing.name == name:
                return timing
        raise DataError(f"No model named {name!r} was timed; the timed models are {', '.join(self.names)}.")

    def ratio(self, name: str, phase: Phase) -> SpeedRatio:
        """`name` ÷ reference throughput, round by round (each pair timed back to back), as median and range."""
        first, timed = self.timings[0], self.of(name)
        reference, model = first.runs(phase), timed.runs(phase)
        return _ratio([m / r for m, r in zip(model, reference)], same_shapes=bool(first.shapes)
                      and first.shapes == timed.shapes)

    def verdict(self, name: str) -> str:
        """'prefill 1.21× faster (1.12–1.30×, 5 interleaved pairs), decode no measurable difference (…)' against
        the first model; 'reference' for the first model itself."""
        if name == self.timings[0].name:
            return "reference"
        return f"prefill {self.ratio(name, 'prefill').describe()}, decode {self.ratio(name, 'decode').describe()}"

    def report(self) -> dict[str, Any]:
        """A JSON-ready table for the CLI reports: per model its median tokens/s and range per phase, its ratios
        to the first model (median, low, high, pairs; None for the first) and the verdict."""
        rows = []
        for timing in self.timings:
            first = timing is self.timings[0]
            row: dict[str, Any] = {"name": timing.name}
            for phase in ("prefill", "decode"):
                row[f"{phase}_tokens_per_s"] = timing.median(phase)
                row[f"{phase}_spread"] = list(timing.spread(phase))
                row[f"{phase}_runs"] = list(timing.runs(phase))
                row[f"{phase}_ratio"] = None if first else self.ratio(timing.name, phase).to_dict()
            row["verdict"] = self.verdict(timing.name)
            rows.append(row)
        return {"rows": rows, "repeats": self.repeats, "prompt_tokens": self.prompt_tokens,
                "new_tokens": self.new_tokens, "threads": self.threads,
                "rule": "median of per-round ratios to the first model; no measurable difference when their "
                        "lowest–highest range covers 1.0"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InterleavedSpeed:
        """The timings `to_dict` wrote (a job's result)."""
        timings = tuple(ModelTimings(t["name"], tuple(t["prefill"]), tuple(t["decode"]), t.get("shapes", ""))
                        for t in data["timings"])
        return cls(timings, int(data["repeats"]), int(data["prompt_tokens"]), int(data["new_tokens"]),
                   int(data["threads"]))


def interleaved_speed(models: Mapping[str, nn.Module], tokenizer: Any = None, repeats: int = SPEED_REPEATS,
                      prompt_tokens: int = SPEED_PROMPT_TOKENS, new_tokens: int = SPEED_NEW_TOKENS,
                      tokenizers: Mapping[str, Any] | None = None,
                      on_run: Callable[[int, int, str], None] | None = None) -> InterleavedSpeed:
    """Time every model once per round for `repeats` rounds, the order rotating each round (A B C, B C A,
    C A B, ...) so neither a drift in machine load nor the position favours one model; one untimed warm-up
    each first. `tokenizers` (per name) overrides `tokenizer` where models do not share one. A spread needs
    at least 2 rounds; one round is allowed for a quick look (`sentinel quantize --runs 1`). `on_run(done,
    total, name)` follows every run, warm-ups included (a job's progress; it may raise to stop)."""
    import torch

    names = list(models)
    if not names:
        raise DataError("interleaved_speed needs at least one model to time.")
    if repeats < 1:
        raise DataError(f"Timing needs at least 1 round, got {repeats}.")
    tokenizer_of = {name: (tokenizers or {}).get(name, tokenizer) for name in names}
    total, done = len(names) * (repeats + 1), 0

    def ran(name: str) -> None:
        nonlocal done
        done += 1
        if on_run is not None:
            on_run(done, total, name)

    for name in names:                                  # one untimed warm-up each
        measure_speed(models[name], tokenizer_of[name], prompt_tokens, new_tokens, runs=1, warmup=0)
        ran(name)
    prefill: dict[str, list[float]] = {name: [] for name in names}
    decode: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            timed = measure_speed(models[name], tokenizer_of[name], prompt_tokens, new_tokens, runs=1, warmup=0)
            prefill[name].append(timed.prefill_tokens_per_s)
            decode[name].append(timed.decode_tokens_per_s)
            ran(name)
    timings = tuple(ModelTimings(name, tuple(prefill[name]), tuple(decode[name]), compute_shapes(models[name]))
                    for name in names)
    logger.info("Timed %d models in %d interleaved rounds", len(names), repeats)
    return InterleavedSpeed(timings, repeats, prompt_tokens, new_tokens, torch.get_num_threads())


def compare_speed(base: nn.Module, pruned: nn.Module, tokenizer: Any, repeats: int = SPEED_REPEATS,
                  prompt_tokens: int = SPEED_PROMPT_TOKENS, new_tokens: int = SPEED_NEW_TOKENS,
                  measure: bool | None = None) -> SpeedComparison:
    """Size change, FLOP prediction, and (when heads were removed, or `measure` is True) interleaved timings."""
    if repeats < 2:
        raise DataError("compare_speed needs at least 2 repeats to show a spread.")
    removed = removed_head_count(pruned)
    predicted = forward_flops(base, FLOPS_CONTEXT, lm_head=True) / forward_flops(pruned, FLOPS_CONTEXT, lm_head=True)
    prefill = decode = None
    smaller = parameter_count(pruned) < parameter_count(base)         # heads, neurons or layers removed
    if measure if measure is not None else smaller:
        timed = interleaved_speed({"base": base, "pruned": pruned}, tokenizer, repeats, prompt_tokens, new_tokens)
        prefill, decode = timed.ratio("pruned", "prefill"), timed.ratio("pruned", "decode")
        logger.info("Speed ratio: prefill %s, decode %s", prefill.describe(), decode.describe())
    return SpeedComparison(prefill, decode, predicted, parameter_count(base), parameter_count(pruned),
                           weight_bytes(base), weight_bytes(pruned), removed)


def compute_shapes(model: nn.Module) -> str:
    """A digest of what a forward pass computes: the model class and every parameter's name, shape and dtype.
    Two models with the same digest run the same kernels on the same shapes (masked units and zeroed weights
    still compute), so any speed difference between them is noise."""
    described = [type(model).__name__] + [f"{n}:{tuple(p.shape)}:{p.dtype}" for n, p in model.named_parameters()]
    return hashlib.sha1("\n".join(described).encode("utf-8")).hexdigest()[:16]


def _ratio(values: list[float], same_shapes: bool = False) -> SpeedRatio:
    return SpeedRatio(statistics.median(values), min(values), max(values), len(values), same_shapes)
