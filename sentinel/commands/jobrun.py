"""Run one background job in the foreground of a command: a terminal progress bar, Ctrl-C cancels it cleanly."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm
from transformers.utils import logging as hf_logging

from sentinel.commands.common import writable_folder
from sentinel.files import prepare_run_folder
from sentinel.errors import SentinelError
from sentinel.jobs import JobManager
from sentinel.store import JobRecord, Store


def run_in_foreground(store: Store, kind: str, params: Mapping[str, Any], device: str, experiment_id: str | None,
                      description: str, unit: str = "step", resume: str | None = None) -> tuple[JobRecord, bool]:
    """Submit a job (or `resume` one by id) and wait for it with a progress bar on stderr; returns (its record,
    whether Ctrl-C stopped it).

    A job that failed on bad input raises its SentinelError message (one line, exit 2 in the CLI).
    """
    hf_logging.disable_progress_bar()   # transformers' own loading bars would garble ours
    manager = JobManager(store)
    bar = tqdm(total=None, desc=description, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)

    def listen(job_id: str, event: dict[str, Any]) -> None:
        if event.get("type") != "progress":
            return
        if event.get("total_steps"):
            bar.total = event["total_steps"]
        bar.n = event["step"]
        parts = [event.get("message") or ""]
        if event.get("loss") is not None:
            parts.append(f"loss {event['loss']:.3f}")
        if event.get("val_perplexity") is not None:
            parts.append(f"val ppl {event['val_perplexity']:.2f}")
        if event.get("tokens_per_second"):
            parts.append(f"{event['tokens_per_second']:.0f} tok/s")
        bar.set_postfix_str(", ".join(p for p in parts if p), refresh=False)
        bar.refresh()

    manager.subscribe(listen)
    stopped = False
    try:
        if resume is not None:
            manager.resume(resume)
            job_id = resume
        else:
            job_id = manager.submit(kind, params, device=device, experiment_id=experiment_id)
        try:
            job = manager.wait(job_id)
        except KeyboardInterrupt:
            bar.write("Stopping after the current step (the last state is kept as a checkpoint)...")
            manager.cancel(job_id)
            job = manager.wait(job_id)
            stopped = True
    finally:
        bar.close()
        manager.shutdown()
    if job.state == "failed":
        if (job.result or {}).get("bad_input"):
            raise SentinelError(job.error.split(": ", 1)[-1])
        print(f"error: the {kind} job failed: {job.error} (job {job.id}; details in the log with -v)", file=sys.stderr)
    return job, stopped


def output_folder(path: str) -> Path:
    """Create and mark the --out folder now (absolute), so a refused or unwritable path is one clear error
    before any work starts (new, empty, or an earlier Sentinel run's folder only)."""
    writable_folder(path, kind="run")
    return prepare_run_folder(path)
