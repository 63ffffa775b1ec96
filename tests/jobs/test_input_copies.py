"""A job's input copies (the dashboard's saved copy of the session's model) are removed when the job ends, in any
state — succeeded, failed, cancelled while running or before it started — and only if Sentinel wrote them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sentinel.errors import JobError
from sentinel.files import mark_folder
from sentinel.jobs import INPUT_COPIES, JobCancelled, JobContext, JobManager, register_job_kind
from sentinel.store import Store
from sentinel.ui.job_copies import input_copy_params, load_job_copy

RELEASE = threading.Event()          # the blocking kind waits on it (or on its cancel)


def _finish_as(params: dict, ctx: JobContext) -> dict:
    """Ends the way params["end"] says, after checking its input copies are still there while it runs."""
    assert all(Path(p).is_dir() for p in params[INPUT_COPIES])
    if params["end"] == "fail":
        raise ValueError("broken on purpose")
    if params["end"] == "cancel":
        raise JobCancelled(ctx.job_id)
    return {"ok": True}


def _block(params: dict, ctx: JobContext) -> dict:
    while not RELEASE.wait(0.05):
        ctx.raise_if_cancelled()
    return {}


register_job_kind("test-input-copies", _finish_as)
register_job_kind("test-input-block", _block)


def _ours(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    mark_folder(folder)
    return folder


def _theirs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    return folder


@pytest.mark.parametrize("end, state", [("ok", "succeeded"), ("fail", "failed"), ("cancel", "cancelled")])
def test_input_copies_go_when_the_job_ends_and_a_folder_sentinel_did_not_write_stays(tmp_path, end, state):
    ours, theirs = _ours(tmp_path / "start"), _theirs(tmp_path / "user-model")
    with JobManager(Store(tmp_path / "s.db")) as jobs:
        job_id = jobs.submit("test-input-copies", input_copy_params({"end": end}, ours, theirs), device="cpu")
        assert jobs.wait(job_id, timeout=60).state == state
    assert not ours.exists()
    assert (theirs / "model.safetensors").is_file()         # no marker: never deleted


def test_a_job_cancelled_before_it_started_loses_its_copy_too(tmp_path):
    RELEASE.clear()
    ours = _ours(tmp_path / "queued-start")
    with JobManager(Store(tmp_path / "s.db"), jobs_per_device=1) as jobs:
        running = jobs.submit("test-input-block", {}, device="cpu")
        queued = jobs.submit("test-input-copies", input_copy_params({"end": "ok"}, ours), device="cpu")
        jobs.cancel(queued)
        assert jobs.get(queued).state == "cancelled" and not ours.exists()
        RELEASE.set()
        assert jobs.wait(running, timeout=60).state == "succeeded"


def test_a_job_resumed_after_its_copy_was_removed_says_so(tmp_path):
    with pytest.raises(JobError, match="removed when the job ended.*start it again on the Prune page"):
        load_job_copy(tmp_path / "gone", "cpu", "Prune")


def test_a_job_that_cannot_be_queued_leaves_no_input_copy(tmp_path):
    """staged_copies: copies saved for a job that then fails to be queued are removed; nobody else's file is."""
    import pytest

    from sentinel.errors import JobError
    from sentinel.files import mark_folder, write_file_atomically
    from sentinel.ui.job_copies import staged_copies

    root = tmp_path / "run"
    with pytest.raises(JobError), staged_copies(root):
        (root / "model").mkdir(parents=True)
        write_file_atomically(root / "model" / "weights.bin", b"x")
        mark_folder(root / "model")                           # what save_model leaves: a marked folder
        raise JobError("the job store is read-only")
    assert not root.exists()

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("not Sentinel's")
    with pytest.raises(JobError), staged_copies(theirs):
        raise JobError("queueing failed")
    assert (theirs / "notes.txt").read_text() == "not Sentinel's"
