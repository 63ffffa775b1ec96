"""Sparsity through training: keep zeros, gradual (Zhu & Gupta 2017) pruning, and lottery tickets.

All three ride on sentinel.training.finetune through one Trainer callback, `SparsityCallback`, and so does
every other fine-tune of a sparse model: finetune calls `hold_zeros`, which installs the masks a loaded
model's record names (from its zeros, sentinel.sparsity.record) and adds the callback. The callback,
after every optimizer step, multiplies each pruned matrix's `weight_orig` by its mask (so pruned
weights are exactly zero in the parameter too, not only in the forward), and with a `GradualSchedule`
it recomputes the masks every `every` steps to the cubic target

    s_t = s_f + (s_i − s_f) · (1 − (t − t_0) / (t_end − t_0))³      for t_0 ≤ t ≤ t_end

Lottery ticket (Frankle & Carbin 2019, rewinding as in Frankle et al. 2020): train → prune `rate` of the
remaining weights by magnitude → rewind the survivors (and every other parameter) to their values at
`rewind_step` (0: as loaded) → repeat; then train the final ticket once more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from sentinel.sparsity.masks import (
    apply_masks, is_sparse_pruned, make_permanent, select_masks, sparsity_stats, zero_pruned_,
)
from sentinel.sparsity.record import install_recorded_masks, pruned_targets, record_sparsity, recorded
from sentinel.sparsity.scores import compute_scores
from sentinel.sparsity.targets import SparsityError, Target, find_targets

logger = logging.getLogger(__name__)

SCHEDULES = ("oneshot", "gradual", "lottery")
MASK_ONLY_METHODS = ("l1", "l2", "random")      # methods that need no calibration text inside the training loop


def cubic_sparsity(step: int, initial: float, final: float, start: int, end: int) -> float:
    """Zhu & Gupta's cubic schedule: `initial` before `start`, `final` from `end` on, cubic in between."""
    if step <= start:
        return initial
    if step >= end:
        return final
    return final + (initial - final) * (1 - (step - start) / (end - start)) ** 3


@dataclass
class GradualSchedule:
    """Gradual pruning from `initial` to `final` sparsity between steps `start` and `end`, masks every `every` steps."""

    initial: float = 0.0
    final: float = 0.5
    start: int = 0
    end: int = 100
    every: int = 10
    method: str = "l1"
    scope: str = "layer"
    seed: int = 0

    def validate(self) -> None:
        for name in ("initial", "final"):
            if not 0 <= getattr(self, name) < 1:
                raise SparsityError(f"Gradual {name} sparsity must be in [0, 1), got {getattr(self, name)}.")
        if self.final < self.initial:
            raise SparsityError(f"Gradual final sparsity {self.final} is below the initial {self.initial}.")
        if self.every < 1:
            raise SparsityError(f"Mask update interval must be at least 1 step, got {self.every}.")
        if not 0 <= self.start < self.end:
            raise SparsityError(f"Gradual pruning needs 0 <= start < end steps, got start={self.start}, end={self.end}.")
        if self.method not in MASK_ONLY_METHODS:
            raise SparsityError(f"Gradual pruning recomputes masks inside training with {', '.join(MASK_ONLY_METHODS)}; "
                                f"{self.method} needs calibration passes, so use it one-shot.")
        if self.scope not in ("layer", "global", "row"):
            raise SparsityError(f"Unknown scope {self.scope!r}; choose layer, global or row.")

    def update_steps(self) -> list[int]:
        """Steps at which masks are recomputed: start, start+every, ..., and end."""
        steps = list(range(self.start, self.end, self.every))
        return sorted({*steps, self.end} - {0})

    def sparsity_at(self, step: int) -> float:
        return cubic_sparsity(step, self.initial, self.final, self.start, self.end)


def gradual_over(steps: int, final: float, method: str = "l1", scope: str = "layer", seed: int = 0,
                 initial: float = 0.0, every: int | None = None) -> GradualSchedule:
    """The gradual schedule for a run of `steps` training steps, as `sentinel sparsify` and the dashboard use it:
    the cubic ramp ends at 75% of the steps (the rest trains at the final sparsity), masks every steps/10."""
    if steps < 1:
        raise SparsityError(f"Gradual pruning needs at least 1 training step, got {steps}.")
    return GradualSchedule(initial=initial, final=final, start=0, end=max(1, round(0.75 * steps)),
                           every=every or max(1, steps // 10), method=method, scope=scope, seed=seed)


class SparsityCallback(TrainerCallback):
    """Keeps pruned weights exactly zero after every optimizer step; runs a GradualSchedule when given one."""

    def __init__(self, model: nn.Module, targets: Sequence[Target], schedule: GradualSchedule | None = None,
                 on_step: Callable[[int], None] | None = None) -> None:
        self.model = model
        self.targets = list(targets)
        self.schedule = schedule
        self.on_step = on_step
        self.history: list[tuple[int, float, float]] = []     # (step, scheduled sparsity, achieved sparsity)
        self._updates = set(schedule.update_steps()) if schedule is not None else set()

    def update_masks(self, step: int) -> None:
        """Recompute masks to the schedule's sparsity at `step` (old zeros stay zero, see scores)."""
        schedule = self.schedule
        target = schedule.sparsity_at(step)
        scores = compute_scores(self.model, self.targets, schedule.method, seed=schedule.seed + step)
        apply_masks(self.targets, select_masks(scores, target, schedule.scope))
        achieved = sparsity_stats(self.model, self.targets).sparsity
        self.history.append((step, target, achieved))
        logger.info("Gradual pruning at step %d: target %.4f, achieved %.4f", step, target, achieved)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        zero_pruned_(self.targets)

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        zero_pruned_(self.targets)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        step = state.global_step
        if step in self._updates:
            self.update_masks(step)
        if self.on_step is not None:
            self.on_step(step)


def start_gradual(model: nn.Module, schedule: GradualSchedule, targets: Sequence[Target] | None = None) -> SparsityCallback:
    """Install the initial masks (sparsity `initial`, all-ones when 0) and return the callback for finetune()."""
    schedule.validate()
    targets = find_targets(model) if targets is None else list(targets)
    install_recorded_masks(model)      # a sparse model's zeros stay zero (apply_masks intersects)
    callback = SparsityCallback(model, targets, schedule)
    scores = compute_scores(model, targets, schedule.method, seed=schedule.seed)
    apply_masks(targets, select_masks(scores, schedule.initial, schedule.scope))
    record_sparsity(model, targets, None, schedule.method)
    callback.history.append((0, schedule.initial, sparsity_stats(model, targets).sparsity))
    return callback


@dataclass
class HeldZeros:
    """How one fine-tune holds a sparse model's zeros: the SparsityCallback it adds (None: a dense model, or the
    caller brought one) and the masks it installed from the record, folded back into plain weights by `finish`."""

    model: nn.Module
    callback: SparsityCallback | None
    installed: list[Target] = field(default_factory=list)

    @contextmanager
    def folded(self) -> Iterator[None]:
        """Plain weights (zeros in place) for a save_model inside training; the masks come back on exit.

        prune.remove and prune.custom_from_mask keep the same Parameter objects, so the optimizer is unaffected.
        """
        pruned = pruned_targets(self.model)
        masks = {t.name: t.to_matrix(t.module.weight_mask) != 0 for t in pruned}
        make_permanent(self.model)
        try:
            yield
        finally:
            apply_masks(pruned, masks)

    def finish(self) -> None:
        """Fold the masks this fine-tune installed (the model leaves as it came: plain weights, still recorded)."""
        for t in self.installed:
            if is_sparse_pruned(t.module):
                prune.remove(t.module, "weight")
        self.installed = []


def hold_zeros(model: nn.Module, callbacks: Sequence[TrainerCallback] = ()) -> HeldZeros:
    """What every fine-tune calls first: a model whose record (or reparametrization) says it is sparse gets its
    masks installed from its zeros and a SparsityCallback (unless `callbacks` bring one), so the zeros, and an
    N:M pattern with them, stay exactly where they are."""
    installed = install_recorded_masks(model) if recorded(model) else []
    if any(isinstance(c, SparsityCallback) for c in callbacks):
        return HeldZeros(model, None, installed)
    targets = pruned_targets(model)
    return HeldZeros(model, SparsityCallback(model, targets) if targets else None, installed)


def finetune_sparse(model: nn.Module, tokenizer: Any, data: Any, config: Any, *, teacher: nn.Module | None = None,
                    callback: SparsityCallback | None = None, **kwargs: Any) -> Any:
    """sentinel.training.finetune with `callback` (a gradual schedule or a lottery round) holding the zeros;
    without one, finetune holds a sparse model's zeros by itself (hold_zeros)."""
    from sentinel.training.finetune import finetune

    extra = list(kwargs.pop("callbacks", ()))
    if callback is not None:
        extra.insert(0, callback)
    return finetune(model, tokenizer, data, config, teacher=teacher, callbacks=extra, **kwargs)


@dataclass
class LotteryConfig:
    """Iterative magnitude pruning with rewinding: `rounds` × (train `steps`, prune `rate` of survivors, rewind)."""

    rounds: int = 2
    rate: float = 0.2                 # fraction of the remaining weights pruned each round
    steps: int = 20                   # training steps per round (and for the final ticket)
    rewind_step: int = 0              # rewind to the values at this step of round 1 (0: as loaded)
    scope: str = "global"
    method: str = "l1"

    def validate(self) -> None:
        if self.rounds < 1:
            raise SparsityError(f"Lottery rounds must be at least 1, got {self.rounds}.")
        if not 0 < self.rate < 1:
            raise SparsityError(f"Lottery prune rate per round must be in (0, 1), got {self.rate}.")
        if self.steps < 1:
            raise SparsityError(f"Lottery steps per round must be at least 1, got {self.steps}.")
        if not 0 <= self.rewind_step < self.steps:
            raise SparsityError(f"Rewind step must be in [0, steps), got {self.rewind_step}.")
        if self.method not in MASK_ONLY_METHODS:
            raise SparsityError(f"Lottery tickets use magnitude masks; method {self.method!r} is not one of "
                                f"{', '.join(MASK_ONLY_METHODS)}.")

    @property
    def final_sparsity(self) -> float:
        return 1 - (1 - self.rate) ** self.rounds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LotteryRound:
    """One round: sparsity after pruning and validation perplexity after that round's training."""

    round: int
    sparsity: float
    perplexity_trained: float


@dataclass
class LotteryResult:
    config: LotteryConfig
    rounds: list[LotteryRound] = field(default_factory=list)
    final_perplexity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "rounds": [asdict(r) for r in self.rounds],
                "final_perplexity": self.final_perplexity}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every trainable value, keyed by parameter name (weight_orig while pruned)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def rewind(model: nn.Module, saved: dict[str, torch.Tensor], targets: Sequence[Target]) -> None:
    """Copy the saved values back into every parameter, then zero the pruned positions again."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(saved[name])
    zero_pruned_(targets)


def lottery_ticket(model: nn.Module, tokenizer: Any, data: Any, finetune_config: Any, config: LotteryConfig,
                   on_round: Callable[[LotteryRound], None] | None = None) -> LotteryResult:
    """Find and train a lottery ticket in place (see module doc); returns perplexity per round."""
    config.validate()
    targets = find_targets(model)
    install_recorded_masks(model)
    if not all(is_sparse_pruned(t.module) for t in targets):     # all-ones masks: names stay weight_orig throughout
        apply_masks(targets, {t.name: torch.ones_like(t.weight(), dtype=torch.bool) for t in targets})
    record_sparsity(model, targets, None, config.method)
    ft = replace(finetune_config, max_steps=config.steps)
    saved: dict[str, dict[str, torch.Tensor]] = {}
    if config.rewind_step == 0:
        saved["values"] = snapshot(model)

    def keep_early(step: int) -> None:
        if step == config.rewind_step and "values" not in saved:
            saved["values"] = snapshot(model)

    result = LotteryResult(config)
    sparsity = 0.0
    for index in range(1, config.rounds + 1):
        callback = SparsityCallback(model, targets, on_step=keep_early if index == 1 else None)
        trained = finetune_sparse(model, tokenizer, data, ft, callback=callback)
        sparsity = 1 - (1 - sparsity) * (1 - config.rate)
        scores = compute_scores(model, targets, config.method)
        apply_masks(targets, select_masks(scores, sparsity, config.scope))
        rewind(model, saved["values"], targets)
        entry = LotteryRound(index, sparsity_stats(model, targets).sparsity, trained.perplexity_after)
        result.rounds.append(entry)
        logger.info("Lottery round %d: trained ppl %.3f, pruned to %.4f and rewound", index,
                    trained.perplexity_after, entry.sparsity)
        if on_round is not None:
            on_round(entry)
    final = finetune_sparse(model, tokenizer, data, ft, callback=SparsityCallback(model, targets))
    result.final_perplexity = final.perplexity_after
    return result

