"""The experiment store: persistence across reopen, concurrent writers, job bookkeeping."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sentinel.store import Store, StoreError, sentinel_home


def test_default_location_follows_sentinel_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "home"))
    store = Store()
    assert sentinel_home() == tmp_path / "home"
    assert store.path == tmp_path / "home" / "sentinel.db"
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_everything_survives_close_and_reopen(tmp_path):
    path = tmp_path / "s.db"
    store = Store(path)
    exp = store.create_experiment("prune+tune", {"strategy": "entropy", "ratio": 0.3}, kind="finetune", model="m")
    store.log_metrics(exp, {"loss": 3.5, "val_perplexity": 30.0}, step=1)
    store.log_metric(exp, "loss", 2.25, step=2)
    store.log_metric(exp, "loss", float("nan"), step=3)
    store.log_sample(exp, "Return the", "Return the value.", step=2)
    store.record_pruned_heads(exp, {0: [1, 3], 2: [0]}, mode="mask", stage="prune")
    (tmp_path / "ckpt").mkdir()
    store.add_checkpoint(exp, tmp_path / "ckpt", step=2, job_id="j1")
    job = store.create_job("finetune", {"steps": 5}, "cpu", experiment_id=exp)
    store.set_job_state(job, "running")
    store.update_job_progress(job, {"step": 2, "loss": 2.25})
    store.set_job_state(job, "succeeded", result={"final_loss": 2.0})
    store.update_experiment(exp, status="done", summary={"ppl_after": 12.5})
    store.update_experiment(exp, summary={"params": 100})
    del store

    again = Store(path)
    record = again.get_experiment(exp)
    assert (record.name, record.kind, record.model, record.status) == ("prune+tune", "finetune", "m", "done")
    assert record.config == {"strategy": "entropy", "ratio": 0.3}
    assert record.summary == {"ppl_after": 12.5, "params": 100}
    curves = again.get_curves(exp)
    assert [(p.step, p.value) for p in curves["loss"][:2]] == [(1, 3.5), (2, 2.25)]
    assert curves["loss"][2].step == 3 and math.isnan(curves["loss"][2].value)
    assert [(p.step, p.value) for p in curves["val_perplexity"]] == [(1, 30.0)]
    assert list(again.get_curves(exp, ["val_perplexity"])) == ["val_perplexity"]
    assert [(s.step, s.prompt, s.text) for s in again.get_samples(exp)] == [(2, "Return the", "Return the value.")]
    assert again.get_pruned_heads(exp) == [
        {"stage": "prune", "layer": 0, "head": 1, "mode": "mask"},
        {"stage": "prune", "layer": 0, "head": 3, "mode": "mask"},
        {"stage": "prune", "layer": 2, "head": 0, "mode": "mask"},
    ]
    ckpt = again.latest_checkpoint(experiment_id=exp)
    assert (ckpt.step, ckpt.path, ckpt.job_id) == (2, str(tmp_path / "ckpt"), "j1")
    stored_job = again.get_job(job)
    assert (stored_job.state, stored_job.progress, stored_job.result) == ("succeeded", {"step": 2, "loss": 2.25},
                                                                          {"final_loss": 2.0})
    assert stored_job.started is not None and stored_job.finished >= stored_job.started
    assert [e.id for e in again.list_experiments()] == [exp]
    assert again.list_experiments(kind="benchmark") == []


def test_list_is_newest_first_and_bad_input_is_clear(tmp_path):
    store = Store(tmp_path / "s.db")
    first = store.create_experiment("a")
    second = store.create_experiment("b")
    assert [e.id for e in store.list_experiments()] == [second, first]
    assert [e.id for e in store.list_experiments(limit=1)] == [second]
    with pytest.raises(StoreError, match="JSON-serialisable"):
        store.create_experiment("bad", {"x": object()})
    with pytest.raises(StoreError, match="No experiment"):
        store.get_experiment("nope")
    with pytest.raises(StoreError, match="Unknown job state"):
        store.set_job_state(store.create_job("k", {}, "cpu"), "exploded")


def test_latest_checkpoint_skips_deleted_folders(tmp_path):
    store = Store(tmp_path / "s.db")
    for step in (1, 2):
        (tmp_path / f"c{step}").mkdir()
        store.add_checkpoint("e", tmp_path / f"c{step}", step=step, job_id="j")
    (tmp_path / "c2").rmdir()
    assert store.latest_checkpoint(job_id="j").step == 1
    assert store.latest_checkpoint(experiment_id="other") is None


def test_two_threads_write_at_once(tmp_path):
    store = Store(tmp_path / "s.db")
    exp = store.create_experiment("threads")

    def writer(name: str) -> None:
        for step in range(100):
            store.log_metric(exp, name, step * 0.5, step)

    threads = [threading.Thread(target=writer, args=(f"m{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    curves = store.get_curves(exp)
    for name in ("m0", "m1"):
        assert [p.step for p in curves[name]] == list(range(100))
        assert curves[name][99].value == 49.5


WRITER = """
import sys
from sentinel.store import Store
store = Store(sys.argv[1])
for step in range(150):
    store.log_metric(sys.argv[2], sys.argv[3], float(step), step)
"""


def test_two_processes_write_at_once(tmp_path):
    path = tmp_path / "s.db"
    exp = Store(path).create_experiment("processes")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), exp, name]) for name in ("p0", "p1")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    curves = Store(path).get_curves(exp)
    assert {name: [p.value for p in points] for name, points in curves.items()} == {
        "p0": [float(s) for s in range(150)], "p1": [float(s) for s in range(150)],
    }


def test_orphaned_jobs_are_marked_interrupted(tmp_path):
    store = Store(tmp_path / "s.db")
    running = store.create_job("k", {}, "cpu")
    store.set_job_state(running, "running")
    queued = store.create_job("k", {}, "cpu")
    done = store.create_job("k", {}, "cpu")
    store.set_job_state(done, "succeeded")
    gone = store.interrupt_orphaned_jobs(lambda job: job.id == queued)
    assert gone == [running]
    assert store.get_job(running).state == "interrupted"
    assert "resume" in store.get_job(running).error
    assert store.get_job(queued).state == "queued"
    assert store.get_job(done).state == "succeeded"
    store.set_job_state(running, "queued")
    assert store.get_job(running).attempt == 2


def test_unwritable_home_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="SENTINEL_HOME"):
        Store(Path(blocker) / "sub" / "s.db")


# -- a run tracker's edits: rename, tags, delete; kept reports ------------------------------------------------------

def test_rename_and_tags_are_checked_before_anything_is_written(tmp_path):
    store = Store(tmp_path / "s.db")
    exp = store.create_experiment("first name", {}, kind="finetune")
    edited = store.edit_experiment(exp, name="  a   better name ", tags=["demo", " baseline ", "demo"])
    assert (edited.name, edited.tags) == ("a better name", ["demo", "baseline"])
    assert Store(tmp_path / "s.db").get_experiment(exp).tags == ["demo", "baseline"]       # kept across reopen
    for bad in (dict(name="renamed", tags=["a,b"]), dict(name="renamed", tags=["x" * 41]), dict(name="   ")):
        with pytest.raises(StoreError, match="needs 1 to"):
            store.edit_experiment(exp, **bad)
    assert store.get_experiment(exp).name == "a better name"       # the valid half of a refused edit is not written
    with pytest.raises(StoreError, match="No experiment"):
        store.edit_experiment("nope", name="x")


def test_delete_removes_every_row_of_the_run_and_nothing_else(tmp_path):
    store = Store(tmp_path / "s.db")
    gone, kept = (store.create_experiment(n, {}, kind="finetune") for n in ("gone", "kept"))
    for exp in (gone, kept):
        store.log_metric(exp, "loss", 1.0, step=1)
        store.log_sample(exp, "p", "t")
        store.record_pruned_heads(exp, {0: [1]}, mode="mask")
        store.add_checkpoint(exp, tmp_path / exp, step=1)
        store.set_job_state(store.create_job("finetune", {}, "cpu", exp), "succeeded")
    assert store.delete_experiment(gone).name == "gone"
    assert [r.id for r in store.list_experiments()] == [kept]
    assert not store.get_curves(gone) and not store.get_samples(gone) and not store.get_pruned_heads(gone)
    assert not store.list_jobs(experiment_id=gone) and len(store.list_jobs(experiment_id=kept)) == 1
    assert store.get_curves(kept) and store.get_samples(kept) and store.get_pruned_heads(kept)
    busy = store.create_experiment("busy", {}, kind="finetune")
    store.set_job_state(store.create_job("finetune", {}, "cpu", busy), "running")
    with pytest.raises(StoreError, match="still being worked on"):
        store.delete_experiment(busy)
    assert store.get_experiment(busy).name == "busy"


def test_a_schema_2_store_gains_tags_and_keeps_its_runs(tmp_path):
    path = tmp_path / "old.db"
    store = Store(path)
    exp = store.create_experiment("old run", {"steps": 3}, kind="finetune")
    db = sqlite3.connect(path)                       # as a schema-2 store was: no tags column, no reports table
    db.execute("ALTER TABLE experiments DROP COLUMN tags")
    db.execute("DROP TABLE reports")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    reopened = Store(path)
    assert reopened.get_experiment(exp).tags == [] and reopened.get_experiment(exp).config == {"steps": 3}
    assert reopened.list_reports() == []


def test_reports_are_read_only_by_a_listed_id(tmp_path):
    store = Store(tmp_path / "s.db")
    report = store.save_report("Review of m", "<html><body>verdict</body></html>")
    assert store.read_report(report) == "<html><body>verdict</body></html>"
    assert [r.id for r in store.list_reports()] == [report]
    assert (tmp_path / "reports" / f"{report}.html").is_file()
    (tmp_path / "secret.txt").write_text("server secret")
    (tmp_path / "reports" / "abcdefabcdef.html").write_text("not listed")
    for bad in ("../secret.txt", "..", "../s.db", "/etc/passwd", "abcdefabcdef", f"{report}/../../secret.txt",
                f"{report}.html", report + "\n", ""):
        with pytest.raises(StoreError, match="no kept report with this id"):
            store.read_report(bad)
    (tmp_path / "reports" / f"{report}.html").unlink()
    (tmp_path / "reports" / f"{report}.html").symlink_to(tmp_path / "secret.txt")   # a listed id, a planted link
    with pytest.raises(StoreError, match="file is gone"):
        store.read_report(report)
