"""A browser session's own model: a deep copy of the shared base model plus the pruning steps applied to it.

The base model is loaded once per process and shared by every session, so it is never modified;
each session prunes its copy. Undo replays the remaining steps on a fresh copy of the base, which
is exact (masks and removals are deterministic) and costs no more memory than one model.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from sentinel.errors import InvalidPruningPlan
from sentinel.models import LoadedModel
from sentinel.models.heads import model_heads
from sentinel.pruning import active_heads
from sentinel.pruning.apply import apply_plan
from sentinel.pruning.units import active_layers
from sentinel.pruning.plan import (HeadPlan, LayerPlan, MixedPlanLike, NeuronPlan, PruningPlan, as_pruning_plan,
                                   plan_to_json)
from sentinel.pruning.recovery import (RECOVERY_METHODS, CalibrationConfig, ProjectionFit, RecoveryResult,
                                       prune_and_recover)
from sentinel.ui.recovered import (RecoveredWeightsError, base_identity, check_saved, load_recovered,
                                   step_fingerprint, weights_path)

logger = logging.getLogger(__name__)

PruneMode = Literal["mask", "remove"]
# Calibration for recovery in the dashboard: 32 blocks of 128 tokens of the bundled train split, so a replay
# after a reload or an undo re-fits the same weights quickly (least squares is deterministic on the same text).
DASHBOARD_CALIBRATION = CalibrationConfig(samples=32, seq_len=128)


@dataclass
class PruneStep:
    """One pruning action as applied: how the units were chosen, masked or removed, and which (original indices);
    `recovery` names the re-fit ("lstsq" or "bias") run right after a removal. A step fitted by a background job
    names the `job` and the `fingerprint` of its saved weights, which a replay loads instead of re-fitting."""

    mode: PruneMode
    heads: HeadPlan
    how: str
    strategy: str | None = None       # the strategy that chose the heads (None: picked by hand)
    ratio: float | None = None        # the ratio it was asked for
    neurons: NeuronPlan = field(default_factory=dict)
    layers: LayerPlan = field(default_factory=dict)
    recovery: str | None = None
    job: str | None = None            # the background job that fitted this step's recovery
    fingerprint: str | None = None    # what its saved weights are (see sentinel.ui.recovered)

    @property
    def saved(self) -> bool:
        """Whether a replay may load this step's weights from its job's file instead of re-fitting them."""
        return bool(self.recovery and self.job and self.fingerprint)

    @property
    def plan(self) -> PruningPlan:
        return PruningPlan(self.heads, self.neurons, self.layers)

    @property
    def count(self) -> int:
        return sum(self.plan.counts().values())

    def describe(self) -> str:
        """The units this step pruned: '23 heads, 3,139 neurons', '1 head', 'layers 4, 7:mlp' (layers by original
        index, a part after ':'), or 'nothing'."""
        counts = self.plan.counts()
        words = [f"{counts[kind]:,} {kind if counts[kind] != 1 else kind[:-1]}" for kind in ("heads", "neurons")
                 if counts[kind]]
        entries = [str(layer) if parts == ["block"] else ", ".join(f"{layer}:{part}" for part in parts)
                   for layer, parts in sorted(self.layers.items()) if parts]
        if entries:
            words.append(f"layer{'s' if counts['layers'] != 1 else ''} {', '.join(entries)}")
        return ", ".join(words) or "nothing"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (the saved model's note, the experiment store)."""
        data = {"mode": self.mode, "heads": plan_to_json(self.heads), "how": self.how, "strategy": self.strategy,
                "ratio": self.ratio}
        if self.neurons or self.layers or self.recovery:
            data.update(neurons=plan_to_json(self.neurons), layers={str(k): list(v) for k, v in self.layers.items()},
                        recovery=self.recovery)
        if self.job or self.fingerprint:
            data.update(job=self.job, fingerprint=self.fingerprint)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneStep:
        """Inverse of `to_dict`."""
        recovery = data.get("recovery")
        if recovery is not None and recovery not in RECOVERY_METHODS:
            raise InvalidPruningPlan(f"Unknown recovery {recovery!r} in a pruning step; use one of "
                                     f"{', '.join(RECOVERY_METHODS)}.")
        return cls(data["mode"], {int(k): list(v) for k, v in data["heads"].items()}, data["how"],
                   data.get("strategy"), data.get("ratio"),
                   {int(k): list(v) for k, v in (data.get("neurons") or {}).items()},
                   {int(k): list(v) for k, v in (data.get("layers") or {}).items()}, recovery,
                   _text_or_none(data.get("job")), _text_or_none(data.get("fingerprint")))


def _text_or_none(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidPruningPlan(f"A pruning step's job and fingerprint are text, got {value!r}.")
    return value


@dataclass
class WorkingModel:
    """The session's copy of `base.model` with `steps` applied, in order; `version` changes with every edit."""

    base: LoadedModel
    model: nn.Module = field(init=False)
    steps: list[PruneStep] = field(default_factory=list)
    version: int = 0
    last_recovery: RecoveryResult | None = None     # what the latest step's recovery did (None: no recovery)
    notes: list[str] = field(default_factory=list)  # why a replay re-fitted instead of loading saved weights

    def __post_init__(self) -> None:
        self.model = self._fresh()

    def _fresh(self) -> nn.Module:
        # The engine keeps head state in module attributes and non-persistent buffers: deepcopy carries both.
        return copy.deepcopy(self.base.model)

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    def apply(self, plan: MixedPlanLike, mode: PruneMode, how: str, strategy: str | None = None,
              ratio: float | None = None, recovery: str | None = None,
              progress: Callable[[int, int], None] | None = None,
              after_removal: Callable[[nn.Module], None] | None = None) -> PruneStep:
        """Mask or remove the plan's heads, neurons and layers (original indices), then re-fit with `recovery`
        (removal only); a plan that changes nothing is an error. `progress(done, total)` follows the re-fit;
        `after_removal(model)` sees the model between removal and recovery."""
        done, result = _apply(self.model, self.tokenizer, as_pruning_plan(plan), mode, how, recovery, progress,
                              after_removal)
        if done.is_empty():
            raise InvalidPruningPlan("Every unit in that plan is already pruned; pick units that are still active.")
        step = PruneStep(mode, done.heads, how, strategy, ratio, done.neurons, done.layers, recovery)
        self._add(step, result)
        logger.info("Session model: %sed %s (%s)", mode, step.describe(), how)
        return step

    def _add(self, step: PruneStep, result: RecoveryResult | None) -> None:
        self.steps.append(step)
        self.version += 1
        self.last_recovery = result
        self.notes.clear()

    def fingerprint(self, step: PruneStep, prior: list[PruneStep] | None = None) -> str:
        """The fingerprint of the weights `step` gives after `prior` (default: this session's steps)."""
        prior = self.steps if prior is None else prior
        return step_fingerprint(base_identity(self.base.source, self.base.model), [s.to_dict() for s in prior],
                                step.to_dict(), DASHBOARD_CALIBRATION.to_dict())

    def adopt(self, step: PruneStep, recovery: RecoveryResult | None = None) -> PruneStep:
        """Add a step whose recovery a background job fitted: remove its units, then load the job's saved weights.

        The step must follow this session's steps exactly (its fingerprint says so); otherwise nothing changes.
        """
        if not step.saved:
            raise InvalidPruningPlan("Only a recovered step with a job and a fingerprint can be adopted.")
        if self.fingerprint(step) != step.fingerprint:
            raise RecoveredWeightsError("The recovered weights were fitted on your model as it was when you pressed "
                                        "Prune; it has changed since (a step was added or undone), so they do not fit. "
                                        "Press Prune again to fit them on the model as it is now.")
        check_saved(weights_path(step.job), step.fingerprint)      # present and ours, before the model is touched
        _load_saved(self.model, step)
        self._add(step, recovery)
        logger.info("Session model: adopted %s recovered by job %s", step.describe(), step.job)
        return step

    def undo(self) -> PruneStep:
        """Take back the last step by replaying the others on a fresh copy of the base model."""
        if not self.steps:
            raise InvalidPruningPlan("Nothing to undo: no heads have been pruned in this session.")
        last = self.steps.pop()
        model = self._fresh()
        self.notes.clear()
        for index, step in enumerate(self.steps):
            self._replay_step(model, index, step)
        self.model = model
        self.version += 1
        return last

    def _replay_step(self, model: nn.Module, index: int, step: PruneStep) -> None:
        """Apply steps[index] again on `model`: from its saved weights when it has verified ones, else re-fit it
        (and say why in `notes`)."""
        if step.saved:
            try:
                expected = self.fingerprint(step, self.steps[:index])
                if expected != step.fingerprint:
                    raise RecoveredWeightsError(f"the step's recorded fingerprint {step.fingerprint} is not the one "
                                                f"its settings give ({expected})")
                check_saved(weights_path(step.job), step.fingerprint)   # present and ours, before the model is touched
            except RecoveredWeightsError as err:
                note = (f"Step {index + 1} ({step.describe()}): its saved {step.recovery} weights could not be used "
                        f"— {str(err).rstrip('.')}. Its recovery was computed again instead, which took longer.")
                logger.warning(note)
                self.notes.append(note)
            else:
                _load_saved(model, step)
                return
        _apply(model, self.tokenizer, step.plan, step.mode, step.how, step.recovery)

    def reset(self) -> None:
        """Back to an untouched copy of the base model."""
        self.steps.clear()
        self.notes.clear()
        self.model = self._fresh()
        self.version += 1

    def pruned(self) -> HeadPlan:
        """Heads no longer active (masked or removed), {layer: [original heads]} for layers that have any."""
        active = active_heads(self.model)
        every = range(self.base.layout.num_heads)
        return {layer: [h for h in every if h not in heads] for layer, heads in active.items()
                if len(heads) < self.base.layout.num_heads}

    def status(self) -> dict[tuple[int, int], str]:
        """'masked' or 'removed' for every original head that is not active (active heads are left out)."""
        heads = model_heads(self.model)
        status: dict[tuple[int, int], str] = {}
        for layer in range(heads.num_layers):
            present, masked = heads.present(layer), heads.masked(layer)
            for head in range(heads.num_heads):
                if head not in present:
                    status[(layer, head)] = "removed"
                elif head in masked:
                    status[(layer, head)] = "masked"
        return status

    def active(self) -> list[tuple[int, int]]:
        """Active (layer, head) pairs in original indices."""
        return [(layer, h) for layer, heads in active_heads(self.model).items() for h in heads]

    def replay(self, steps: list[PruneStep]) -> None:
        """Apply recorded steps (e.g. those a fine-tune job started from) to an untouched copy."""
        if self.steps:
            raise InvalidPruningPlan("This session has already pruned its model; reset it before replaying steps.")
        notes = []
        for step in steps:
            if step.saved:
                self._replay_step(self.model, len(self.steps), step)
                notes += self.notes
                self._add(step, None)
            else:
                self.apply(step.plan, step.mode, step.how, step.strategy, step.ratio, step.recovery)
        self.notes[:] = notes

    def blocks(self) -> list[int]:
        """Layers (original indices) whose block is still in the model with a part active: those a selection may
        remove."""
        return [layer for layer, parts in active_layers(self.model).items() if parts]

    def pruned_fraction(self) -> float:
        """Share of the original heads that are no longer active."""
        layout = self.base.layout
        return 1.0 - len(self.active()) / (layout.num_layers * layout.num_heads)

    def history(self) -> list[dict[str, Any]]:
        """The steps as plain dicts (for the saved model's note and the experiment store)."""
        return [step.to_dict() for step in self.steps]


def made_before(record: Mapping[str, Any], working: WorkingModel, what: str) -> str | None:
    """Why a result recorded with the model it was made on (`base_model` and `dashboard_steps`, as every dashboard
    job records them) no longer describes the session's model; None while it does (same base, same steps)."""
    base = record.get("base_model")
    if base is None or Path(str(base)).expanduser().resolve() != Path(working.base.source).expanduser().resolve():
        name = Path(str(base)).name if base else "not recorded"
        return f"{what} was made on another model ({name}), not the one open now."
    then, now = list(record.get("dashboard_steps") or []), working.history()
    if then == now:
        return None
    if len(then) < len(now) and now[:len(then)] == then:
        step = PruneStep.from_dict(now[len(then)])
        return (f"{what} was made on your model before step {len(then) + 1} ({step.mode} {step.describe()}; "
                f"base {Path(working.base.source).name}).")
    return (f"{what} was made on your model with other pruning steps ({len(then)} then, {len(now)} now; "
            f"base {Path(working.base.source).name}).")


def ran_on(record: Mapping[str, Any], working: WorkingModel) -> bool:
    """Whether a job recorded on the session's model as it is now (same base model, same pruning steps)."""
    return made_before(record, working, "It") is None


def recovery_result(data: dict[str, Any] | None) -> RecoveryResult | None:
    """A RecoveryResult from its `to_dict` form (a job's result), or None."""
    if data is None:
        return None
    return RecoveryResult(**{**data, "fits": [ProjectionFit(**fit) for fit in data.get("fits", [])]})


def _load_saved(model: nn.Module, step: PruneStep) -> None:
    """Remove the step's units (no re-fit), then load the weights its job saved (fingerprint checked again)."""
    apply_plan(model, step.plan, "remove", note={"how": step.how})
    load_recovered(model, weights_path(step.job), step.fingerprint)


def _apply(model: nn.Module, tokenizer: Any, plan: PruningPlan, mode: str, how: str, recovery: str | None,
           progress: Callable[[int, int], None] | None = None,
           after_removal: Callable[[nn.Module], None] | None = None) -> tuple[PruningPlan, RecoveryResult | None]:
    """Apply one step to `model`: `apply_plan`, with `recovery` run by `prune_and_recover` after a removal."""
    if mode not in ("mask", "remove"):
        raise InvalidPruningPlan(f"Unknown pruning mode {mode!r}; use 'mask' or 'remove'.")
    if recovery is None:
        return apply_plan(model, plan, mode, note={"how": how} if mode == "remove" else None), None
    if mode != "remove":
        raise InvalidPruningPlan("Recovery re-fits weights after units are removed; choose removal to use it.")
    def remove(m: nn.Module) -> PruningPlan:
        done = apply_plan(m, plan, "remove", note={"how": how})
        if after_removal is not None:
            after_removal(m)
        return done

    return prune_and_recover(model, tokenizer, remove, recovery, DASHBOARD_CALIBRATION, progress=progress)
