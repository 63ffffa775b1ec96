"""A browser session's own model: a deep copy of the shared base model plus the pruning steps applied to it.

The base model is loaded once per process and shared by every session, so it is never modified;
each session prunes its copy. Undo replays the remaining steps on a fresh copy of the base, which
is exact (masks and removals are deterministic) and costs no more memory than one model.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from sentinel.errors import InvalidPruningPlan
from sentinel.models import LoadedModel
from sentinel.models.heads import model_heads
from sentinel.pruning import active_heads, mask_heads, remove_heads
from sentinel.pruning.plan import HeadPlan, PlanLike, plan_to_json

logger = logging.getLogger(__name__)

PruneMode = Literal["mask", "remove"]


@dataclass
class PruneStep:
    """One pruning action as applied: how the heads were chosen, masked or removed, and which (original indices)."""

    mode: PruneMode
    heads: HeadPlan
    how: str
    strategy: str | None = None       # the strategy that chose the heads (None: picked by hand)
    ratio: float | None = None        # the ratio it was asked for

    @property
    def count(self) -> int:
        return sum(len(h) for h in self.heads.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (the saved model's note, the experiment store)."""
        return {"mode": self.mode, "heads": plan_to_json(self.heads), "how": self.how, "strategy": self.strategy,
                "ratio": self.ratio}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneStep:
        """Inverse of `to_dict`."""
        return cls(data["mode"], {int(k): list(v) for k, v in data["heads"].items()}, data["how"],
                   data.get("strategy"), data.get("ratio"))


@dataclass
class WorkingModel:
    """The session's copy of `base.model` with `steps` applied, in order; `version` changes with every edit."""

    base: LoadedModel
    model: nn.Module = field(init=False)
    steps: list[PruneStep] = field(default_factory=list)
    version: int = 0

    def __post_init__(self) -> None:
        self.model = self._fresh()

    def _fresh(self) -> nn.Module:
        # The engine keeps head state in module attributes and non-persistent buffers: deepcopy carries both.
        return copy.deepcopy(self.base.model)

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    def apply(self, plan: PlanLike, mode: PruneMode, how: str, strategy: str | None = None,
              ratio: float | None = None) -> PruneStep:
        """Mask or remove the plan's heads (original indices); a plan that changes nothing is an error."""
        if mode not in ("mask", "remove"):
            raise InvalidPruningPlan(f"Unknown pruning mode {mode!r}; use 'mask' or 'remove'.")
        done = mask_heads(self.model, plan) if mode == "mask" else remove_heads(self.model, plan, note={"how": how})
        if not done:
            raise InvalidPruningPlan("Every head in that plan is already pruned; pick heads that are still active.")
        step = PruneStep(mode, done, how, strategy, ratio)
        self.steps.append(step)
        self.version += 1
        logger.info("Session model: %sed %d heads (%s)", mode, step.count, how)
        return step

    def undo(self) -> PruneStep:
        """Take back the last step by replaying the others on a fresh copy of the base model."""
        if not self.steps:
            raise InvalidPruningPlan("Nothing to undo: no heads have been pruned in this session.")
        last = self.steps.pop()
        model = self._fresh()
        for step in self.steps:
            (mask_heads if step.mode == "mask" else remove_heads)(model, step.heads)
        self.model = model
        self.version += 1
        return last

    def reset(self) -> None:
        """Back to an untouched copy of the base model."""
        self.steps.clear()
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
        for step in steps:
            self.apply(step.heads, step.mode, step.how, step.strategy, step.ratio)

    def pruned_fraction(self) -> float:
        """Share of the original heads that are no longer active."""
        layout = self.base.layout
        return 1.0 - len(self.active()) / (layout.num_layers * layout.num_heads)

    def history(self) -> list[dict[str, Any]]:
        """The steps as plain dicts (for the saved model's note and the experiment store)."""
        return [step.to_dict() for step in self.steps]
