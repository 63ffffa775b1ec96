"""Job kinds used by the job-manager tests (importable by name, so a second process can run them too)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sentinel.jobs import JobContext, ProgressEvent


def counting_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Count to params["total"], one 'step' per params["delay"] seconds, checkpointing every step."""
    start = 0
    if ctx.resume_checkpoint is not None:
        start = json.loads((Path(ctx.resume_checkpoint.path) / "state.json").read_text())["step"]
    steps_run = 0
    for step in range(start + 1, params["total"] + 1):
        if ctx.cancelled:
            break
        time.sleep(params.get("delay", 0.0))
        folder = Path(params["out"]) / f"step-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "state.json").write_text(json.dumps({"step": step}))
        ctx.checkpoint(folder, step)
        ctx.report(ProgressEvent(step=step, total_steps=params["total"], loss=1.0 / step))
        steps_run += 1
    return {"started_at": start, "steps_run": steps_run}


def failing_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    raise ValueError(params.get("message", "boom"))
