"""The model copies a dashboard job reads once: saved by the page before the job is queued, removed when it ends.

A background job cannot use the session's model in memory (it may run in another process, or after a reload), so the
page saves it under the data folder and the job loads it. Those copies are the job's input only, and for a real model
each is gigabytes (review #15): `input_copy_params` lists them under `sentinel.jobs.INPUT_COPIES`, and the job manager
removes them when the job ends in any state — only folders carrying Sentinel's marker (`remove_owned_folder`). What a
page needs after the job (its result, weights it adopts) is written elsewhere and kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sentinel.errors import JobError
from sentinel.files import read_marker, remove_owned_folder
from sentinel.jobs import INPUT_COPIES
from sentinel.models import LoadedModel, load_model
from sentinel.store import JobRecord, Store, StoreError


def input_copy_params(params: Mapping[str, Any], *folders: str | Path) -> dict[str, Any]:
    """`params` plus the folders the job manager removes when the job ends."""
    return {**params, INPUT_COPIES: [str(folder) for folder in folders]}


@contextmanager
def staged_copies(folder: Path) -> Iterator[Path]:
    """Where a page saves a job's input copies and queues the job: when saving or queuing fails, the copies made so
    far are removed here (no job will ever remove what it never got) — only what carries Sentinel's marker."""
    try:
        yield folder
    except BaseException:
        _remove_staged(folder)
        raise


def _remove_staged(folder: Path) -> None:
    if not folder.is_dir():
        return
    if read_marker(folder) is not None:           # a finished save_model, or a job folder marked as a whole
        remove_owned_folder(folder)
        return
    for child in folder.iterdir():                # the copies saved so far, each marked by save_model
        if child.is_dir() and read_marker(child) is not None:
            remove_owned_folder(child)
    if not any(folder.iterdir()):                 # nothing else (nobody else's file) left: the folder we made
        folder.rmdir()


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
