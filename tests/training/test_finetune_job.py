"""Fine-tuning as a background job: cancellation with a loadable checkpoint, failures, crash and resume."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sentinel.jobs import JobManager
from sentinel.models import load_model, model_heads
from sentinel.pruning import masked_heads
from sentinel.store import Store
from sentinel.training.job import FineTuneJob
from tests.training.helpers import tiny_config

REPO = Path(__file__).resolve().parents[2]


def job_params(model_dir, text, out, **config) -> dict:
    job = FineTuneJob(out=str(out), config=tiny_config(**config), model=str(model_dir), text=str(text),
                      prune_plan={"0": [1]})
    return job.to_dict()


def test_job_round_trips_through_json(tiny_lm_dir, tiny_text_file, tmp_path):
    params = job_params(tiny_lm_dir, tiny_text_file, tmp_path / "o", max_steps=5)
    assert FineTuneJob.from_dict({**params, "device": "cpu"}).to_dict() == params


def test_finetune_job_succeeds_and_is_recorded(tiny_lm_dir, tiny_text_file, tmp_path):
    store = Store(tmp_path / "s.db")
    exp = store.create_experiment("ft", kind="finetune")
    with JobManager(store) as manager:
        job_id = manager.submit("finetune", job_params(tiny_lm_dir, tiny_text_file, tmp_path / "o"), "cpu", exp)
        job = manager.wait(job_id, timeout=300)
    assert job.state == "succeeded", job.error
    assert job.result["stopped"] == "completed" and job.result["steps"] == 3
    assert [p.step for p in store.get_curves(exp)["loss"]] == [1, 2, 3]
    assert store.get_experiment(exp).summary["model"] == str((tmp_path / "o" / "model").resolve())
    assert store.get_pruned_heads(exp) == [{"stage": "before-finetune", "layer": 0, "head": 1, "mode": "mask"}]
    assert not (tmp_path / "o" / "checkpoint").exists()
    reloaded = load_model(tmp_path / "o" / "model", device="cpu")
    assert masked_heads(reloaded.model) == {0: [1]}


def test_cancel_stops_the_job_within_one_step_and_its_checkpoint_loads(tiny_lm_dir, tiny_text_file, tmp_path):
    store = Store(tmp_path / "s.db")
    steps: list[int] = []
    second = threading.Event()

    def listen(job_id: str, event: dict) -> None:
        if event["type"] == "progress" and event.get("loss") is not None:
            steps.append(event["step"])
            if event["step"] >= 2:
                second.set()

    with JobManager(store) as manager:
        manager.subscribe(listen)
        job_id = manager.submit("finetune", job_params(tiny_lm_dir, tiny_text_file, tmp_path / "o", max_steps=500),
                                "cpu")
        assert second.wait(300)
        manager.cancel(job_id)
        requested_at = max(steps)
        job = manager.wait(job_id, timeout=300)
    assert job.state == "cancelled"
    assert job.result["stopped"] == "cancelled"
    assert job.result["steps"] <= requested_at + 1
    checkpoint = store.latest_checkpoint(job_id=job_id)
    assert checkpoint.step == job.result["steps"]
    loaded = load_model(checkpoint.path, device="cpu")
    assert loaded.record["note"]["step"] == job.result["steps"]
    assert masked_heads(loaded.model) == {0: [1]}
    assert model_heads(loaded.model).num_layers == 2


def test_a_job_whose_training_raises_fails_and_the_manager_keeps_working(tiny_lm_dir, tiny_text_file, tmp_path,
                                                                          monkeypatch):
    import sentinel.training.job as job_module

    calls = {"n": 0}
    real = job_module.finetune

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(job_module, "finetune", flaky)
    with JobManager(Store(tmp_path / "s.db")) as manager:
        bad = manager.submit("finetune", job_params(tiny_lm_dir, tiny_text_file, tmp_path / "a"), "cpu")
        good = manager.submit("finetune", job_params(tiny_lm_dir, tiny_text_file, tmp_path / "b"), "cpu")
        assert manager.wait(bad, 300).state == "failed"
        assert manager.get(bad).error == "RuntimeError: CUDA out of memory (simulated)"
        assert manager.wait(good, 300).state == "succeeded"


CHILD = """
import sys, time
from sentinel.jobs import JobManager
from sentinel.store import Store
manager = JobManager(Store(sys.argv[1]))
job = manager.submit("finetune", __import__("json").loads(sys.argv[2]), device="cpu")
print(job, flush=True)
time.sleep(900)
"""


@pytest.mark.slow
def test_a_killed_finetune_is_interrupted_and_resumes_from_its_checkpoint(tiny_lm_dir, tiny_text_file, tmp_path):
    import json

    db = tmp_path / "s.db"
    params = job_params(tiny_lm_dir, tiny_text_file, tmp_path / "o", max_steps=40, checkpoint_every=2)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), json.dumps(params)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    job_id = child.stdout.readline().strip()
    store = Store(db)
    deadline = time.monotonic() + 300
    while store.latest_checkpoint(job_id=job_id) is None:
        assert time.monotonic() < deadline and child.poll() is None, "the child never checkpointed"
        time.sleep(0.05)
    child.kill()
    child.wait()
    checkpoint = store.latest_checkpoint(job_id=job_id)
    assert store.get_job(job_id).state == "running"          # as the dead process left it
    assert checkpoint.step < 40

    with JobManager(store) as manager:
        assert manager.get(job_id).state == "interrupted"
        manager.resume(job_id)
        job = manager.wait(job_id, timeout=600)
    assert job.state == "succeeded", job.error
    assert job.attempt == 2
    assert job.result["start_step"] >= checkpoint.step
    assert job.result["steps"] == 40
    assert masked_heads(load_model(job.result["model"], device="cpu").model) == {0: [1]}
