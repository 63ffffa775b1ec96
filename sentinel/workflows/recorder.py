"""`RunRecorder`: the one way a workflow records a run: loss, perplexity, pruning, samples and its `RunSummary`.

Every workflow (experiment, benchmark, plasticity) records through it, in memory and, when it has a store and
an experiment id, in the experiment store. `ProgressTracker` (sentinel.pruning.experiment_runner) is this class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sentinel.jobs import ProgressEvent
from sentinel.store import Store
from sentinel.workflows.summary import RunSummary


class RunRecorder:
    """Records a run's loss, perplexity, pruning and samples: in memory, and in the store when given."""

    def __init__(self, store: Store | None = None, experiment_id: str | None = None) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.losses: list[tuple[int, float]] = []
        self.perplexities: list[dict[str, Any]] = []
        self.pruning: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []

    @classmethod
    def start(cls, store: Store, name: str, config: Mapping[str, Any], kind: str, model: str | None = None,
              experiment_id: str | None = None) -> RunRecorder:
        """A recorder for a new experiment record (or for `experiment_id` when the record already exists)."""
        if experiment_id is None:
            experiment_id = store.create_experiment(name, dict(config), kind=kind, model=model)
        return cls(store, experiment_id)

    @property
    def recording(self) -> bool:
        return self.store is not None and self.experiment_id is not None

    def record_event(self, event: ProgressEvent) -> None:
        """A fine-tuning progress event: its loss and validation perplexity (and the rest into the store)."""
        if event.loss is not None:
            self.losses.append((event.step, event.loss))
        if event.val_perplexity is not None:
            self.perplexities.append({"stage": "finetune", "step": event.step, "perplexity": event.val_perplexity})
        if self.recording and event.metrics():
            self.store.log_metrics(self.experiment_id, event.metrics(), event.step)

    def record_loss(self, step: int, loss: float) -> None:
        self.record_event(ProgressEvent(step=step, loss=loss))

    def record_perplexity(self, stage: str, value: float, step: int = 0) -> None:
        """A perplexity measured at a named stage (baseline, pruned, finetuned ...)."""
        self.perplexities.append({"stage": stage, "step": step, "perplexity": value})
        if self.recording:
            self.store.log_metric(self.experiment_id, f"perplexity_{stage}", value, step)

    def record_metrics(self, values: Mapping[str, float], step: int) -> None:
        """Named measurements at one step (store time series only)."""
        if self.recording and values:
            self.store.log_metrics(self.experiment_id, dict(values), step)

    def record_pruning(self, plan: Mapping[int | str, list[int]], mode: str, stage: str = "prune") -> None:
        """Which original heads a stage pruned (or grew: mode "grow")."""
        heads = {str(layer): list(hs) for layer, hs in sorted(plan.items(), key=lambda item: int(item[0])) if hs}
        self.pruning.append({"stage": stage, "mode": mode, "heads": heads})
        if self.recording:
            self.store.record_pruned_heads(self.experiment_id, plan, mode, stage)

    def record_sample(self, prompt: str, text: str, step: int = 0, label: str = "") -> None:
        self.samples.append({"step": step, "prompt": prompt, "text": text, "label": label})
        if self.recording:
            self.store.log_sample(self.experiment_id, prompt, text, step)

    def write_summary(self, summary: RunSummary, status: str | None = None) -> None:
        """Merge the summary into the experiment record (and set its status when given)."""
        if self.recording:
            self.store.update_experiment(self.experiment_id, status=status, summary=summary.to_dict())

    def set_status(self, status: str) -> None:
        if self.recording:
            self.store.update_experiment(self.experiment_id, status=status)

    def stored_summary(self) -> RunSummary:
        """The summary the store holds for this run so far (empty when not recording)."""
        if not self.recording:
            return RunSummary()
        return RunSummary.from_dict(self.store.get_experiment(self.experiment_id).summary)

    def to_dict(self) -> dict[str, Any]:
        return {"losses": [list(p) for p in self.losses], "perplexities": self.perplexities,
                "pruning": self.pruning, "samples": self.samples}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecorder:
        tracker = cls()
        tracker.losses = [tuple(p) for p in data.get("losses", [])]
        tracker.perplexities = list(data.get("perplexities", []))
        tracker.pruning = list(data.get("pruning", []))
        tracker.samples = list(data.get("samples", []))
        return tracker
