"""The job manager: states, progress, cancellation, failures, queue limits, crash recovery."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sentinel.errors import JobError
from sentinel.jobs import JobManager, ProgressEvent, register_job_kind
from sentinel.store import Store
from tests.jobs.helpers import failing_job

REPO = Path(__file__).resolve().parents[2]
register_job_kind("test-count", "tests.jobs.helpers:counting_job")
register_job_kind("test-fail", failing_job)


@pytest.fixture
def manager(tmp_path):
    with JobManager(Store(tmp_path / "s.db")) as jobs:
        yield jobs


def test_job_runs_reports_progress_and_records_result(manager, tmp_path):
    exp = manager.store.create_experiment("count")
    events: list[dict] = []
    manager.subscribe(lambda job_id, event: events.append(event))
    job_id = manager.submit("test-count", {"total": 3, "out": str(tmp_path / "c")}, device="cpu", experiment_id=exp)
    job = manager.wait(job_id, timeout=60)
    assert job.state == "succeeded"
    assert job.result == {"started_at": 0, "steps_run": 3}
    assert job.progress["step"] == 3 and job.progress["total_steps"] == 3
    assert [p.value for p in manager.store.get_curves(exp)["loss"]] == [1.0, 0.5, 1.0 / 3]
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states == ["queued", "running", "succeeded"]
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 3]


def test_failed_job_keeps_its_message_and_the_manager_keeps_working(manager, tmp_path):
    bad = manager.submit("test-fail", {"message": "the data file is empty"}, device="cpu")
    good = manager.submit("test-count", {"total": 1, "out": str(tmp_path / "c")}, device="cpu")
    assert manager.wait(bad, timeout=60).state == "failed"
    assert manager.get(bad).error == "ValueError: the data file is empty"
    assert manager.wait(good, timeout=60).state == "succeeded"


def test_cancel_stops_a_running_job_within_one_step(manager, tmp_path):
    steps: list[int] = []
    seen_two = threading.Event()

    def on_event(job_id: str, event: dict) -> None:
        if event["type"] == "progress":
            steps.append(event["step"])
            if event["step"] == 2:
                seen_two.set()

    manager.subscribe(on_event)
    job_id = manager.submit("test-count", {"total": 1000, "delay": 0.02, "out": str(tmp_path / "c")}, device="cpu")
    assert seen_two.wait(30)
    manager.cancel(job_id)
    at_cancel = len(steps)
    job = manager.wait(job_id, timeout=30)
    assert job.state == "cancelled" and job.error == "Cancelled by the user."
    assert job.result["steps_run"] <= at_cancel + 1
    assert manager.store.latest_checkpoint(job_id=job_id).step == job.result["steps_run"]


def test_one_job_per_device_and_a_bounded_queue(tmp_path):
    release = threading.Event()
    spans: dict[str, tuple[float, float]] = {}

    def blocking(params, ctx):
        begin = time.monotonic()
        release.wait(30)
        spans[params["name"]] = (begin, time.monotonic())
        return {}

    register_job_kind("test-block", blocking)
    with JobManager(Store(tmp_path / "s.db"), max_queued=1) as manager:
        first = manager.submit("test-block", {"name": "a"}, device="cpu")
        while manager.get(first).state != "running":
            time.sleep(0.01)
        second = manager.submit("test-block", {"name": "b"}, device="cpu")
        with pytest.raises(JobError, match="queue is full"):
            manager.submit("test-block", {"name": "c"}, device="cpu")
        assert manager.get(second).state == "queued"
        release.set()
        assert manager.wait(first, 30).state == "succeeded"
        assert manager.wait(second, 30).state == "succeeded"
    assert spans["b"][0] >= spans["a"][1]   # never two at once on one device


def test_cancel_a_queued_job_and_unknown_kind(manager, tmp_path):
    release = threading.Event()
    register_job_kind("test-wait", lambda params, ctx: release.wait(30) and {})
    running = manager.submit("test-wait", {}, device="cpu")
    queued = manager.submit("test-count", {"total": 1, "out": str(tmp_path / "c")}, device="cpu")
    manager.cancel(queued)
    release.set()
    assert manager.wait(queued, 10).state == "cancelled"
    assert manager.wait(running, 30).state == "succeeded"
    assert not (tmp_path / "c").exists()
    with pytest.raises(JobError, match="Unknown job kind"):
        manager.submit("no-such-kind", {})
    with pytest.raises(JobError, match="only interrupted, cancelled, failed"):
        manager.resume(running)


CRASHING = """
import sys, time
from sentinel.jobs import JobManager, register_job_kind
from sentinel.store import Store
register_job_kind("test-count", "tests.jobs.helpers:counting_job")
manager = JobManager(Store(sys.argv[1]))
job = manager.submit("test-count", {"total": 30, "delay": 0.1, "out": sys.argv[2]}, device="cpu")
print(job, flush=True)
time.sleep(600)
"""


def test_killed_process_leaves_an_interrupted_job_that_resumes(tmp_path):
    db = tmp_path / "s.db"
    child = subprocess.Popen([sys.executable, "-c", CRASHING, str(db), str(tmp_path / "c")], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    job_id = child.stdout.readline().strip()
    store = Store(db)
    deadline = time.monotonic() + 120
    while (store.latest_checkpoint(job_id=job_id) is None or store.latest_checkpoint(job_id=job_id).step < 3):
        assert time.monotonic() < deadline, "the child never checkpointed"
        time.sleep(0.05)
    child.kill()
    child.wait()
    assert store.get_job(job_id).state == "running"   # as the dead process left it

    with JobManager(store) as manager:
        assert job_id in manager.interrupted
        assert manager.get(job_id).state == "interrupted"
        last = store.latest_checkpoint(job_id=job_id).step
        manager.resume(job_id)
        job = manager.wait(job_id, timeout=60)
    assert job.state == "succeeded" and job.attempt == 2
    assert job.result == {"started_at": last, "steps_run": 30 - last}


def test_progress_event_round_trip():
    event = ProgressEvent(step=4, total_steps=10, loss=2.0, eta_seconds=3.5)
    assert ProgressEvent.from_dict(event.to_dict()) == event
    assert event.metrics() == {"loss": 2.0}
