"""Job and experiment records stay true (issue 9, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

import sentinel.store as store_module
from sentinel.cli import main
from sentinel.jobs import JobContext, JobManager, ProgressEvent, register_job_kind
from sentinel.store import Store
from tests.jobs.helpers import failing_job

REPO = Path(__file__).resolve().parents[2]
register_job_kind("test-count", "tests.jobs.helpers:counting_job")
register_job_kind("test-fail", failing_job)


def sparse_checkpoint_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Report a loss every step, checkpoint every 2 steps; stop by itself after params["stop_after"] steps."""
    start = ctx.resume_checkpoint.step if ctx.resume_checkpoint is not None else 0
    for step in range(start + 1, params["total"] + 1):
        ctx.report(ProgressEvent(step=step, total_steps=params["total"], loss=float(step)))
        if step % 2 == 0:
            folder = Path(params["out"]) / f"step-{step}"
            folder.mkdir(parents=True, exist_ok=True)
            ctx.checkpoint(folder, step)
        if ctx.attempt == 1 and step == params["stop_after"]:
            raise RuntimeError("simulated crash after the step was logged")
    return {"started_at": start}


register_job_kind("test-sparse", sparse_checkpoint_job)


def test_failed_and_cancelled_jobs_set_their_experiment_status(tmp_path):
    with JobManager(Store(tmp_path / "s.db")) as manager:
        failed = manager.store.create_experiment("fails", status="running")
        job = manager.submit("test-fail", {}, device="cpu", experiment_id=failed)
        assert manager.wait(job, timeout=60).state == "failed"
        assert manager.store.get_experiment(failed).status == "failed"

        cancelled = manager.store.create_experiment("cancelled", status="running")
        job = manager.submit("test-count", {"total": 500, "delay": 0.02, "out": str(tmp_path / "c")}, device="cpu",
                             experiment_id=cancelled)
        while manager.get(job).progress.get("step", 0) < 1:
            time.sleep(0.02)
        manager.cancel(job)
        assert manager.wait(job, timeout=60).state == "cancelled"
        assert manager.store.get_experiment(cancelled).status == "cancelled"


def test_an_interrupted_job_marks_its_experiment_interrupted(tmp_path, monkeypatch):
    store = Store(tmp_path / "s.db")
    experiment = store.create_experiment("left running", status="running")
    dead = _dead_pid()
    monkeypatch.setattr(store_module.os, "getpid", lambda: dead)
    job = store.create_job("test-count", {"total": 1}, "cpu", experiment)
    store.set_job_state(job, "running")
    monkeypatch.undo()
    with JobManager(store) as manager:
        assert job in manager.interrupted
    assert store.get_experiment(experiment).status == "interrupted"


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_resumed_run_does_not_store_its_metric_points_twice(tmp_path):
    with JobManager(Store(tmp_path / "s.db")) as manager:
        experiment = manager.store.create_experiment("resumed")
        job = manager.submit("test-sparse", {"total": 8, "stop_after": 5, "out": str(tmp_path / "c")},
                             device="cpu", experiment_id=experiment)
        assert manager.wait(job, timeout=60).state == "failed"   # steps 1-5 logged, last checkpoint at step 4
        manager.resume(job)
        record = manager.wait(job, timeout=60)
    assert record.state == "succeeded" and record.result == {"started_at": 4}
    steps = [p.step for p in manager.store.get_curves(experiment)["loss"]]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]


RUNNER = """
import sys
from sentinel.jobs import JobManager, register_job_kind
from sentinel.store import Store
register_job_kind("test-count", "tests.jobs.helpers:counting_job")
with JobManager(Store(sys.argv[1])) as manager:
    job = manager.submit("test-count", {"total": 2000, "delay": 0.05, "out": sys.argv[2]}, device="cpu")
    print(job, flush=True)
    print(manager.wait(job, timeout=240).state, flush=True)
"""


def test_cli_cancels_a_job_running_in_another_process(tmp_path, monkeypatch, capsys):
    child = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path / "sentinel.db"), str(tmp_path / "c")],
                             cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        job = child.stdout.readline().strip()
        store = Store(tmp_path / "sentinel.db")
        deadline = time.monotonic() + 120
        while store.get_job(job).progress.get("step", 0) < 2:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
        assert main(["jobs", "list"]) == 0
        assert job in capsys.readouterr().out
        assert main(["jobs", "cancel", job, "--wait", "60"]) == 0
        assert capsys.readouterr().out.strip() == f"job {job}: cancelled"
        assert child.stdout.readline().strip() == "cancelled"
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
    record = store.get_job(job)
    assert record.state == "cancelled" and record.progress["step"] < 2000


def test_jobs_resume_runs_an_interrupted_job_from_the_cli(tmp_path, monkeypatch, capsys):
    store = Store(tmp_path / "sentinel.db")
    with JobManager(store) as manager:
        job = manager.submit("test-count", {"total": 30, "delay": 0.05, "out": str(tmp_path / "c")}, device="cpu")
        while manager.get(job).progress.get("step", 0) < 3:
            time.sleep(0.02)
        manager.cancel(job)
        manager.wait(job, timeout=60)
    done = store.get_job(job).progress["step"]
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    assert main(["jobs", "resume", job]) == 0
    assert capsys.readouterr().out.strip().endswith(f"job {job}: succeeded")
    assert store.get_job(job).result == {"started_at": done, "steps_run": 30 - done}


def test_the_trainer_scratch_folder_is_removed_even_when_the_trainer_cannot_start(monkeypatch, tiny_lm):
    import importlib

    from tests.training.helpers import tiny_config, tiny_data

    finetune_module = importlib.import_module("sentinel.training.finetune")   # the package re-exports the function
    made: list[str] = []
    real = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    def broken(*args, **kwargs):
        raise RuntimeError("the Trainer could not be built")

    monkeypatch.setattr(finetune_module.tempfile, "mkdtemp", recording_mkdtemp)
    monkeypatch.setattr(finetune_module, "SentinelTrainer", broken)
    model, tokenizer = tiny_lm
    with pytest.raises(RuntimeError, match="could not be built"):
        finetune_module.finetune(model, tokenizer, tiny_data(tokenizer), tiny_config())
    assert len(made) == 1 and not Path(made[0]).exists()


RESUME_FAILING = """
import sys
from sentinel.jobs import register_job_kind
register_job_kind("test-fail", "tests.jobs.helpers:failing_job")
from sentinel.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("debug", [False])   # --debug showing the traceback: test_bad_files
def test_a_job_that_crashes_in_the_cli_prints_no_traceback_unless_debug(tmp_path, debug):
    store = Store(tmp_path / "sentinel.db")
    with JobManager(store) as manager:
        job = manager.submit("test-fail", {"message": "boom"}, device="cpu")
        assert manager.wait(job, timeout=60).state == "failed"
    args = [*(["--debug"] if debug else []), "jobs", "resume", job]
    done = subprocess.run([sys.executable, "-c", RESUME_FAILING, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "SENTINEL_HOME": str(tmp_path)})
    assert done.returncode == 1
    assert ("Traceback" in done.stderr) == debug
    assert f"error: the test-fail job failed: ValueError: boom (job {job}" in done.stderr
