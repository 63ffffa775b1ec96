"""The Weights page's layer-sensitivity scan, the background job kind "weights-sensitivity": every body matrix
pruned alone at each level and measured with the app's protocol; recorded in the experiment store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from sentinel.errors import DataError
from sentinel.jobs import JobContext, JobManager, ProgressEvent
from sentinel.models import get_layout, save_model
from sentinel.sparsity.schedule import MASK_ONLY_METHODS
from sentinel.sparsity.sensitivity import SensitivityResult, SensitivityRow, layer_sensitivity, suggest_sparsity
from sentinel.store import Store, sentinel_home
from sentinel.ui.history import sensitivity_run_name
from sentinel.ui.job_copies import input_copy_params, load_job_copy, staged_copies
from sentinel.ui.protocol import EVAL_PROTOCOL, EvalProtocol, protocol_perplexity
from sentinel.ui.session import WorkingModel
from sentinel.workflows.summary import RunSummary

SENSITIVITY_KIND = "weights-sensitivity"
SENSITIVITY_RUNS = "weights-sensitivity"          # $SENTINEL_HOME/<this>/<experiment>/start: the scanned model


@dataclass
class SensitivityRequest:
    """Which sparsity levels to probe each matrix at, by which mask, on how many protocol tokens."""

    method: str = "l1"
    levels: list[float] = field(default_factory=lambda: [0.1, 0.5])
    eval_tokens: int = EVAL_PROTOCOL.tokens

    def validate(self) -> None:
        if not self.levels or any(not 0 < s < 1 for s in self.levels):
            raise DataError(f"Pick sparsity levels between 0 and 1 to probe, got {self.levels}.")
        if self.method not in MASK_ONLY_METHODS:
            raise DataError(f"Sensitivity probes use {', '.join(MASK_ONLY_METHODS)} masks, not {self.method!r}.")
        if self.eval_tokens < 2 * EVAL_PROTOCOL.window:
            raise DataError(f"Score at least {2 * EVAL_PROTOCOL.window} tokens per probe, got {self.eval_tokens}.")

    def protocol(self) -> EvalProtocol:
        return EvalProtocol(tokens=self.eval_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def start_sensitivity(jobs: JobManager, store: Store, working: WorkingModel, request: SensitivityRequest,
                      device: str = "auto") -> str:
    """Save the session's model, record an experiment and queue the scan; returns the job id."""
    request.validate()
    layers = len(get_layout(working.model).present_blocks)
    config = {**request.to_dict(), "base_model": working.base.source, "dashboard_steps": working.history(),
              "protocol": request.protocol().describe()}
    experiment = store.create_experiment(sensitivity_run_name(request, layers), config, kind=SENSITIVITY_KIND,
                                         model=working.base.source)
    with staged_copies(sentinel_home() / SENSITIVITY_RUNS / experiment / "start") as folder:
        start = save_model(working.model, working.tokenizer, folder, note={"dashboard_steps": working.history()})
        return jobs.submit(SENSITIVITY_KIND, input_copy_params({"model": str(start), "request": request.to_dict()},
                                                               start), device=device, experiment_id=experiment)


def run_sensitivity_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "weights-sensitivity": every body matrix pruned alone at every level,
    measured with the app's protocol; the table and a suggested per-matrix sparsity go into the experiment.
    The job manager removes the start copy when the job ends (`input_copy_params`)."""
    loaded = load_job_copy(params["model"], ctx.device, "Weights")
    request = SensitivityRequest(**params["request"])
    request.validate()
    protocol = request.protocol()

    def evaluate(model: nn.Module) -> float:
        return protocol_perplexity(model, loaded.tokenizer, protocol).perplexity

    def progress(done: int, total: int, row: SensitivityRow) -> None:
        ctx.report(ProgressEvent(step=done, total_steps=total, message=f"{row.label} at {row.sparsity:.0%}: "
                                 f"perplexity {row.perplexity:,.2f} ({row.delta:+.2f})"), record_metrics=False)
        ctx.raise_if_cancelled()          # between probes: the model is restored bit for bit after each

    ctx.report(ProgressEvent(step=0, message="Measuring the unpruned model"), record_metrics=False)
    result = layer_sensitivity(loaded.model, evaluate, levels=sorted(request.levels), method=request.method,
                               on_progress=progress)
    summary = RunSummary(status="completed", baseline_perplexity=result.baseline, extra={
        "sensitivity": result.to_dict(), "suggestion": suggest_sparsity(result), "protocol": protocol.describe()})
    if ctx.experiment_id is not None:
        ctx.store.update_experiment(ctx.experiment_id, status="completed", summary=summary.to_dict())
    return summary.to_dict()


def sensitivity_of(summary: Mapping[str, Any]) -> SensitivityResult | None:
    """The scan a job result or a 'weights-sensitivity' experiment summary holds (None when it holds none)."""
    data = summary.get("sensitivity")
    if not isinstance(data, Mapping):
        return None
    return SensitivityResult(data["baseline"], list(data["levels"]), data["method"],
                             [SensitivityRow(**row) for row in data["rows"]])


def sensitivity_table(result: SensitivityResult, suggestion: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per matrix, named by its block's original layer and its path in the block (never the module path,
    whose index shifts once a block was removed): Δ perplexity at each level (and the suggested sparsity that
    protects sensitive ones)."""
    rows: dict[str, dict[str, Any]] = {}
    for r in result.rows:
        entry = rows.setdefault(r.name, {"layer": r.layer, "matrix": r.matrix if r.layer is not None else r.name})
        entry[f"Δ ppl at {r.sparsity:.0%}"] = round(r.delta, 3)
    if suggestion:
        for name, entry in rows.items():
            entry["suggested sparsity"] = suggestion.get(name)
    return pd.DataFrame(list(rows.values()))
