"""A session's work kept as a run before another model replaces it: its base model, pruning steps (replayable, as
the page address replays them) and adopted fine-tune, recorded in the experiment store where Experiments lists it.

Nothing of a session is discarded without that record: the Model page keeps the run first, then asks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.evaluation.size import parameter_count
from sentinel.store import Store
from sentinel.ui.choices import ModelChoice
from sentinel.ui.format import plural
from sentinel.ui.history import session_run_name
from sentinel.ui.session import WorkingModel
from sentinel.workflows.summary import RunSummary

logger = logging.getLogger(__name__)

SESSION_KIND = "session"


@dataclass(frozen=True)
class SessionWork:
    """What a session would lose: its pruning steps and the fine-tuned model it adopted ("<job id>/final" or
    "<job id>/step-N"), on the model version `version` of the working copy `working` (its id)."""

    working: int
    version: int
    steps: int
    adopted: str | None

    def describe(self) -> str:
        """'3 pruning steps and an adopted fine-tune', '1 pruning step', 'an adopted fine-tune'."""
        parts = [plural(self.steps, "pruning step")] if self.steps else []
        if self.adopted:
            parts.append("an adopted fine-tune")
        return " and ".join(parts)


@dataclass(frozen=True)
class PendingLoad:
    """A model the user asked to load while the session held work: that work, and the run it was kept as."""

    choice: ModelChoice
    work: SessionWork
    run: str


def model_name(choice: ModelChoice) -> str:
    """The model as visitors read it: the bundled model's label, a folder's name (never the server's path), or a
    hub id."""
    if choice.source is None:
        return choice.label()
    return Path(choice.source).name if Path(choice.source).is_absolute() else choice.source


def session_work(working: WorkingModel | None, adopted: str | None) -> SessionWork | None:
    """The work a session holds now, or None when it has nothing to lose (no steps, no adopted fine-tune)."""
    if working is None or (not working.steps and not adopted):
        return None
    return SessionWork(id(working), working.version, len(working.steps), adopted)


def keep_session(store: Store, working: WorkingModel, adopted: str | None, device: str, dtype: str,
                 perplexity_pruned: float | None = None, perplexity_tuned: float | None = None) -> str:
    """Record the session as a finished run of kind "session" (its steps, per-step heads and adopted fine-tune;
    the perplexities it has measured, when given); returns the run's id."""
    steps = working.history()
    config: dict[str, Any] = {"base_model": working.base.source, "device": device, "dtype": dtype,
                              "dashboard_steps": steps, "adopted_finetune": adopted}
    run = store.create_experiment(session_run_name(steps, adopted), config, kind=SESSION_KIND,
                                  model=working.base.source, status="running")
    for index, step in enumerate(working.steps, start=1):
        if step.heads:
            store.record_pruned_heads(run, step.heads, step.mode, stage=f"step {index}")
    layout = working.base.layout
    summary = RunSummary(status="kept", perplexity_pruned=perplexity_pruned,
                         perplexity_after=perplexity_tuned if perplexity_tuned is not None else perplexity_pruned,
                         params_before=parameter_count(working.base.model), params_after=parameter_count(working.model),
                         heads_pruned=layout.num_layers * layout.num_heads - len(working.active()),
                         active_heads=len(working.active()))
    store.update_experiment(run, status="kept", summary=summary.to_dict())
    logger.info("Kept the session's work (%d steps, fine-tune %s) as run %s", len(steps), adopted, run)
    return run
