"""The Maps page's expensive metrics as the background job kind "unit-metrics".

Loss impact runs one pass over the text per head, or per layer and part, and on a larger model the data metrics
(activation, Wanda, gradient, block influence) take seconds too: those run as a job with progress, Cancel, and a
result a reload finds again; cheap ones (magnitude, or any metric on a small model) stay in the page's run.

The job starts from a copy of the session's model saved under the data folder (removed when the job ends, see
`sentinel.ui.job_copies`) and the sample text (a pasted or uploaded text is written beside it). Its result is the
scores; a job is found again by its `signature`, which names everything the scores depend on (the model folder's
files, its pruning steps, device and dtype, the text, the sampling, the unit kind and metric), so a different
model, pruning state or text never reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.errors import DataError
from sentinel.files import mark_folder, write_file_atomically
from sentinel.jobs import JobContext, JobManager, ProgressEvent
from sentinel.metrics import needs_data
from sentinel.metrics.scores import UnitScores
from sentinel.models import save_model
from sentinel.store import JobRecord, Store, new_id, sentinel_home
from sentinel.ui.choices import SampleText
from sentinel.ui.job_copies import input_copy_params, load_job_copy, matching_job, staged_copies
from sentinel.ui.maps_cache import maps_fingerprint
from sentinel.ui.unit_maps import UnitMap, compute_unit_map

logger = logging.getLogger(__name__)

UNIT_METRICS_KIND = "unit-metrics"
UNIT_METRICS_RUNS = "unit-metrics"     # $SENTINEL_HOME/<this>/<id>/: the model copy and text, removed after the job
ALWAYS_BACKGROUND = frozenset({"loss_impact"})      # one pass over the text per layer and part: always a job
# A data metric (a forward, or forward and backward, pass over the text) runs as a job once parameters x tokens
# reach this: measured on the bundled model (5.1 M parameters, 1,024 tokens) gradient importance took 0.3 s on one
# shared CPU thread (the slowest data metric), so this bound puts the job line near two seconds of work.
BACKGROUND_WORK = 36e9
TEXT_FILE = "sample-text"


def runs_in_background(metric: str, parameters: int, tokens: int) -> bool:
    """Whether the Maps page computes `metric` as a job: loss impact always, data metrics on larger work."""
    if metric in ALWAYS_BACKGROUND:
        return True
    return needs_data([metric]) and parameters * tokens >= BACKGROUND_WORK


@dataclass(frozen=True)
class MetricRequest:
    """What one unit-metrics job computes: a metric of one unit kind over `samples` blocks of `block_size` tokens of
    the text, on a model placed on `device` in `dtype`."""

    kind: str
    metric: str
    samples: int
    block_size: int
    device: str = "auto"
    dtype: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "samples": self.samples, "block_size": self.block_size,
                "device": self.device, "dtype": self.dtype}


def metric_signature(source: str, steps: list[dict[str, Any]], text: SampleText, request: MetricRequest) -> str:
    """A key for scores of this model (its folder's files when it has one), pruning steps, text and request that a
    reload rebuilds the same."""
    payload = json.dumps({"source": str(source), "steps": steps, "text": text.digest, **request.to_dict(),
                          "files": maps_fingerprint(source, request.device, request.dtype, steps, text.digest,
                                                    request.samples, request.block_size)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def start_metric_job(jobs: JobManager, model: Any, tokenizer: Any, text: SampleText, request: MetricRequest,
                     signature: str) -> str:
    """Save the session's model (and a pasted or uploaded text) for the job and queue it; returns the job id.
    The job manager removes the saved folder when the job ends, in any state."""
    if request.samples < 1 or request.block_size < 2:
        raise DataError("Compute the map over at least one block of two or more tokens.")
    root = sentinel_home() / UNIT_METRICS_RUNS / new_id()
    with staged_copies(root):
        save_model(model, tokenizer, root / "model", note={"unit_metrics": f"{request.kind} {request.metric}"})
        if text.data is not None:
            write_file_atomically(root / TEXT_FILE, text.data)
        mark_folder(root, kind="run")
        params = {"model": str(root / "model"), "text": {"kind": text.kind, "name": text.name},
                  "text_file": str(root / TEXT_FILE) if text.data is not None else None,
                  "request": request.to_dict(), "signature": signature}
        return jobs.submit(UNIT_METRICS_KIND, input_copy_params(params, root), device=request.device)


def run_unit_metrics_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "unit-metrics": load the copy, tokenise the text as the page does, compute
    the metric with progress per head or layer part (loss impact) and stop at the next one when cancelled."""
    request = MetricRequest(**params["request"])
    ctx.report(ProgressEvent(step=0, message="loading the model copy"), record_metrics=False)
    loaded = load_job_copy(params["model"], ctx.device, "Maps",
                           dtype=None if request.dtype == "auto" else request.dtype)
    data = Path(params["text_file"]).read_bytes() if params.get("text_file") else None
    text = SampleText(params["text"]["kind"], params["text"]["name"], data)
    blocks = text.blocks(loaded.tokenizer, request.block_size, request.samples * request.block_size)
    ctx.raise_if_cancelled()

    unit = {"head": "head", "layer": "layer part"}.get(request.kind, "step")

    def progress(done: int, total: int) -> None:
        ctx.report(ProgressEvent(step=done, total_steps=total, message=f"{unit} {done} of {total}"),
                   record_metrics=False)
        ctx.raise_if_cancelled()               # raised from the callback: the scan stops before the next pass

    ctx.report(ProgressEvent(step=0, total_steps=1, message=f"computing over {blocks.num_tokens:,} tokens"),
               record_metrics=False)
    found = compute_unit_map(loaded.model, loaded.tokenizer, request.kind, request.metric, blocks,
                             progress=progress)
    ctx.raise_if_cancelled()
    logger.info("Unit metrics %s/%s over %d tokens in %.2f s", request.kind, request.metric, found.tokens,
                found.seconds)
    return {"scores": found.scores.to_dict(), "tokens": found.tokens, "seconds": found.seconds, "text": found.text}


def metric_job_for(store: Store, signature: str, own: str | None = None) -> JobRecord | None:
    """The unit-metrics job for exactly these scores: this session's latest when it is, else the newest one queued,
    running or succeeded (so a reload finds it again); None when there is none."""
    return matching_job(store, UNIT_METRICS_KIND, signature, own)


def unit_map_of(job: JobRecord) -> UnitMap:
    """A succeeded unit-metrics job's scores."""
    result = job.result or {}
    if "scores" not in result:
        raise DataError(f"Job {job.id} has no scores (it {job.state}); compute the map again.")
    return UnitMap(UnitScores.from_dict(result["scores"]), int(result["tokens"]), float(result["seconds"]),
                   str(result.get("text", "")))
