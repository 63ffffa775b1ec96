"""The model copies a dashboard job reads once: saved by the page before the job is queued, removed when it ends.

A background job cannot use the session's model in memory (it may run in another process, or after a reload), so the
page saves it under the data folder and the job loads it. Those copies are the job's input only, and for a real model
each is gigabytes (review #15): `input_copy_params` lists them under `sentinel.jobs.INPUT_COPIES`, and the job manager
removes them when the job ends in any state — only folders carrying Sentinel's marker (`remove_owned_folder`). What a
page needs after the job (its result, weights it adopts) is written elsewhere and kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sentinel.errors import JobError
from sentinel.jobs import INPUT_COPIES
from sentinel.models import LoadedModel, load_model
from sentinel.store import JobRecord, Store, StoreError


def input_copy_params(params: Mapping[str, Any], *folders: str | Path) -> dict[str, Any]:
    """`params` plus the folders the job manager removes when the job ends."""
    return {**params, INPUT_COPIES: [str(folder) for folder in folders]}


def load_job_copy(folder: str | Path, device: str, page: str, **kwargs: Any) -> LoadedModel:
    """Load a job's input copy; a clear error when it is gone (a job resumed after it had ended)."""
    if not Path(folder).is_dir():
        raise JobError(f"The model copy this job started from ({folder}) was removed when the job ended, so it "
                       f"cannot run again; start it again on the {page} page.")
    return load_model(str(folder), device=device, **kwargs)


def matching_job(store: Store, kind: str, signature: str, own: str | None = None) -> JobRecord | None:
    """The job of `kind` whose params carry `signature` (what its result was computed on): the session's own job
    `own` when it matches, in any state, else the newest one queued, running or succeeded — so a reload or a second
    tab finds a job again without an address field. None when there is none."""
    if own is not None:
        try:
            job = store.get_job(own)
        except StoreError:                   # not in this store (the data folder changed): look it up below
            job = None
        if job is not None and job.kind == kind and job.params.get("signature") == signature:
            return job
    for job in store.list_jobs(("queued", "running", "succeeded")):
        if job.kind == kind and job.params.get("signature") == signature:
            return job
    return None
