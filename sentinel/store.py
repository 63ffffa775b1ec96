"""The experiment store: one SQLite file (WAL mode) recording every run so a page reload or restart loses nothing.

Where: `$SENTINEL_HOME/sentinel.db`, with SENTINEL_HOME defaulting to `./runs`. Every call opens its own short
connection, so one `Store` may be shared by threads, and several processes may write the same file at once
(SQLite serialises the writers; a busy writer waits up to `timeout` seconds).

API (all ids are strings; configs, summaries and progress are JSON-ready dicts):

    store = Store()                                            # or Store("path/to/file.db")
    exp = store.create_experiment("name", config, kind="finetune", model="path or hub id")
    store.update_experiment(exp, status="done", summary={...})
    store.get_experiment(exp) -> ExperimentRecord;  store.list_experiments(kind=None) -> newest first
    store.log_metric(exp, "loss", 2.31, step=10);   store.log_metrics(exp, {"loss": 2.3, "lr": 1e-4}, step=10)
    store.get_curves(exp, names=None) -> {"loss": [MetricPoint(step, value, time), ...], ...}
    store.log_sample(exp, prompt, text, step);      store.get_samples(exp) -> [SampleRecord]
    store.record_pruned_heads(exp, {layer: [heads]}, mode="mask", stage="cycle-1");  store.get_pruned_heads(exp)
    store.add_checkpoint(exp, path, step, job_id);  store.latest_checkpoint(exp=None, job_id=None)
    store.create_job(kind, params, device, exp);    store.set_job_state(job, "running", error=None, result=None)
    store.update_job_progress(job, {...});          store.get_job(job);  store.list_jobs(states=None)
    store.interrupt_orphaned_jobs(is_alive) -> ids marked "interrupted" (the job manager calls it on start)
    store.edit_experiment(exp, name="new name", tags=["baseline", "demo"]) -> ExperimentRecord
    store.delete_experiment(exp) -> ExperimentRecord (its rows, in one transaction; refused while a job runs it)
    store.save_report(title, html) -> id;          store.list_reports();  store.read_report(id) -> html

Reports are HTML files in `reports/` beside the store file (one `<id>.html` each, written atomically), listed in
the `reports` table; `read_report` opens only a file the table lists, by an id of `new_id`'s shape, so a visitor's
id can never name another file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError
from sentinel.files import write_file_atomically

logger = logging.getLogger(__name__)

DB_FILE = "sentinel.db"
SCHEMA_VERSION = 3   # 2: jobs.cancel_requested (cancel a job from any process); 3: experiments.tags, reports
REPORTS_FOLDER = "reports"
MAX_NAME = 200
MAX_TAG = 40
_ID = re.compile(r"[0-9a-f]{12}")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINISHED_STATES = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, model TEXT, status TEXT NOT NULL,
    config TEXT NOT NULL, summary TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    experiment_id TEXT NOT NULL, name TEXT NOT NULL, step INTEGER NOT NULL, value REAL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_experiment ON metrics (experiment_id, name, step);
CREATE TABLE IF NOT EXISTS samples (
    experiment_id TEXT NOT NULL, step INTEGER NOT NULL, prompt TEXT NOT NULL, text TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_experiment ON samples (experiment_id, step);
CREATE TABLE IF NOT EXISTS pruned_heads (
    experiment_id TEXT NOT NULL, stage TEXT NOT NULL, layer INTEGER NOT NULL, head INTEGER NOT NULL,
    mode TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pruned_by_experiment ON pruned_heads (experiment_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    experiment_id TEXT, job_id TEXT, step INTEGER NOT NULL, path TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_by_experiment ON checkpoints (experiment_id);
CREATE INDEX IF NOT EXISTS checkpoints_by_job ON checkpoints (job_id);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, experiment_id TEXT, kind TEXT NOT NULL, params TEXT NOT NULL, device TEXT NOT NULL,
    state TEXT NOT NULL, progress TEXT NOT NULL, result TEXT, error TEXT, attempt INTEGER NOT NULL,
    owner_pid INTEGER, owner_host TEXT, owner_token TEXT,
    created REAL NOT NULL, started REAL, finished REAL, cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, created REAL NOT NULL, experiment_id TEXT
);
"""


class StoreError(SentinelError):
    """The experiment store cannot be opened, or was asked for something it does not hold."""


def sentinel_home() -> Path:
    """The data folder: $SENTINEL_HOME, or ./runs."""
    return Path(os.environ.get("SENTINEL_HOME") or "runs").expanduser()


def new_id() -> str:
    """A short random id, unique enough for one person's runs (48 random bits)."""
    return uuid.uuid4().hex[:12]


@dataclass
class ExperimentRecord:
    """One experiment row: its config and summary as dicts."""

    id: str
    name: str
    kind: str
    model: str | None
    status: str
    config: dict[str, Any]
    summary: dict[str, Any]
    created: float
    updated: float
    tags: list[str] = field(default_factory=list)     # the user's labels (stores before schema 3: none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentRecord:
        return cls(**data)


@dataclass
class ReportRecord:
    """A review report kept in the store: its HTML lives in `reports/<id>.html` beside the store file."""

    id: str
    title: str
    created: float
    experiment_id: str | None = None


@dataclass
class MetricPoint:
    """One point of a metric's time series (value NaN when a non-finite value was logged)."""

    step: int
    value: float
    created: float


@dataclass
class SampleRecord:
    """One generated text recorded during a run."""

    step: int
    prompt: str
    text: str
    created: float


@dataclass
class CheckpointRecord:
    """A model folder written by `save_model` during a run."""

    experiment_id: str | None
    job_id: str | None
    step: int
    path: str
    created: float


@dataclass
class JobRecord:
    """One background job: what to run (kind + JSON params), where, and how it went."""

    id: str
    experiment_id: str | None
    kind: str
    params: dict[str, Any]
    device: str
    state: str
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempt: int
    owner_pid: int | None
    owner_host: str | None
    owner_token: str | None
    created: float
    started: float | None
    finished: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        return cls(**data)


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise StoreError(f"The {what} must be JSON-serialisable (plain dicts, lists, numbers, strings): {err}") from None


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class Store:
    """Handle on one store file; cheap to create, safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser() if path is not None else sentinel_home() / DB_FILE
        self.timeout = timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"Cannot create the store folder {self.path.parent}: {err.strerror}. "
                             "Set SENTINEL_HOME to a writable folder.") from None
        with self._read() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer Sentinel (schema {version}); upgrade Sentinel.")
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            columns = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
            if "cancel_requested" not in columns:   # a schema-1 store: add the column, keep every row
                db.execute("ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")
            if "tags" not in {row["name"] for row in db.execute("PRAGMA table_info(experiments)")}:   # schema < 3
                db.execute("ALTER TABLE experiments ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- connections -------------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise StoreError(f"Cannot open the store {self.path}: {err}. Check SENTINEL_HOME.") from None
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")   # WAL + NORMAL: a process crash never loses a commit
            db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as err:
            db.close()
            raise self._unreadable(err) from None
        return db

    def _unreadable(self, err: sqlite3.Error) -> StoreError:
        """The one error for a store file that is corrupt, not a database, or not readable."""
        if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
            return StoreError(f"The store {self.path} stayed locked for {self.timeout:.0f} s by another process; "
                              "try again when it has finished.")
        return StoreError(f"The store {self.path} cannot be read ({err}): it is corrupt or not a Sentinel store. "
                          "Move it aside (e.g. rename it to sentinel.db.broken) to start a new one, "
                          "or set SENTINEL_HOME to another folder.")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE so concurrent writers queue instead of deadlocking."""
        db = self._connect()
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise self._unreadable(err) from None
            try:
                yield db
            except sqlite3.DatabaseError as err:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._unreadable(err) from None
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        except sqlite3.DatabaseError as err:
            raise self._unreadable(err) from None
        finally:
            db.close()

    # -- experiments -------------------------------------------------------------------------------------------

    def create_experiment(self, name: str, config: Mapping[str, Any] | None = None, kind: str = "experiment",
                          model: str | None = None, status: str = "created") -> str:
        """Record a new experiment with its JSON config; returns its id."""
        exp_id, now = new_id(), time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO experiments (id, name, kind, model, status, config, summary, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (exp_id, name, kind, model, status, _dumps(dict(config or {}), "config"), "{}", now, now),
            )
        return exp_id

    def update_experiment(self, experiment_id: str, status: str | None = None,
                          summary: Mapping[str, Any] | None = None, merge: bool = True) -> None:
        """Set the status and/or the summary (merged into the stored one unless merge=False)."""
        with self._write() as db:
            row = db.execute("SELECT summary FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
            if row is None:
                raise StoreError(f"No experiment {experiment_id!r} in {self.path}.")
            if summary is not None:
                merged = {**json.loads(row["summary"]), **summary} if merge else dict(summary)
                db.execute("UPDATE experiments SET summary = ? WHERE id = ?", (_dumps(merged, "summary"), experiment_id))
            if status is not None:
                db.execute("UPDATE experiments SET status = ? WHERE id = ?", (status, experiment_id))
            db.execute("UPDATE experiments SET updated = ? WHERE id = ?", (time.time(), experiment_id))

    def get_experiment(self, experiment_id: str) -> ExperimentRecord:
        with self._read() as db:
            row = db.execute("SELECT * FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
        if row is None:
            raise StoreError(f"No experiment {experiment_id!r} in {self.path}.")
        return _experiment(row)

    def list_experiments(self, kind: str | None = None, limit: int | None = None) -> list[ExperimentRecord]:
        """Experiments, newest first (optionally of one kind)."""
        query, args = "SELECT * FROM experiments", []
        if kind is not None:
            query, args = query + " WHERE kind = ?", [kind]
        query += " ORDER BY created DESC, rowid DESC"
        if limit is not None:
            query, args = query + " LIMIT ?", [*args, int(limit)]
        with self._read() as db:
            return [_experiment(row) for row in db.execute(query, args)]

    def edit_experiment(self, experiment_id: str, name: str | None = None,
                        tags: list[str] | tuple[str, ...] | None = None) -> ExperimentRecord:
        """Rename a run and/or replace its tags, both checked before either is written (one transaction); returns
        the record as stored. A name is trimmed to 1 to MAX_NAME characters; each tag to 1 to MAX_TAG characters
        without a comma (duplicates dropped, order kept)."""
        changes: dict[str, str] = {}
        if name is not None:
            name = " ".join(str(name).split())
            if not name or len(name) > MAX_NAME:
                raise StoreError(f"A run's name needs 1 to {MAX_NAME} characters; got {len(name)}.")
            changes["name"] = name
        if tags is not None:
            cleaned = list(dict.fromkeys(" ".join(str(t).split()) for t in tags))
            for tag in cleaned:
                if not tag or len(tag) > MAX_TAG or "," in tag:
                    raise StoreError(f"A tag needs 1 to {MAX_TAG} characters and no comma; got {tag!r}.")
            changes["tags"] = json.dumps(cleaned)
        with self._write() as db:
            if db.execute("SELECT 1 FROM experiments WHERE id = ?", (experiment_id,)).fetchone() is None:
                raise StoreError(f"No experiment {experiment_id!r} in {self.path}.")
            for column, value in changes.items():      # column names from the two above, never from the caller
                db.execute(f"UPDATE experiments SET {column} = ? WHERE id = ?", (value, experiment_id))
            db.execute("UPDATE experiments SET updated = ? WHERE id = ?", (time.time(), experiment_id))
        return self.get_experiment(experiment_id)

    def delete_experiment(self, experiment_id: str) -> ExperimentRecord:
        """Remove a run and everything the store holds about it (metrics, samples, pruned heads, checkpoint rows,
        its finished jobs) in one transaction; returns the record as it was. Refused while one of its jobs is
        queued or running. Files stay on disk (the caller removes only folders Sentinel marked as its own)."""
        with self._write() as db:
            row = db.execute("SELECT * FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
            if row is None:
                raise StoreError(f"No experiment {experiment_id!r} in {self.path}.")
            busy = db.execute("SELECT id FROM jobs WHERE experiment_id = ? AND state IN ('queued', 'running')",
                              (experiment_id,)).fetchone()
            if busy is not None:
                raise StoreError(f"Run {experiment_id} is still being worked on by job {busy['id']}; cancel the job "
                                 "or wait for it to finish, then delete the run.")
            for table in ("metrics", "samples", "pruned_heads", "checkpoints", "jobs"):
                db.execute(f"DELETE FROM {table} WHERE experiment_id = ?", (experiment_id,))
            db.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,))
        logger.info("Deleted run %s (%s) from %s", experiment_id, row["name"], self.path)
        return _experiment(row)

    # -- reports -----------------------------------------------------------------------------------------------

    @property
    def reports_folder(self) -> Path:
        return self.path.parent / REPORTS_FOLDER

    def save_report(self, title: str, html: str, experiment_id: str | None = None) -> str:
        """Keep a report: its HTML written atomically to reports/<id>.html, then listed; returns its id."""
        report_id = new_id()
        try:
            self.reports_folder.mkdir(exist_ok=True)
        except OSError as err:
            raise StoreError(f"Cannot create the reports folder {self.reports_folder}: {err.strerror}. "
                             "Set SENTINEL_HOME to a writable folder.") from None
        write_file_atomically(self.reports_folder / f"{report_id}.html", html)
        with self._write() as db:
            db.execute("INSERT INTO reports VALUES (?, ?, ?, ?)",
                       (report_id, " ".join(title.split())[:MAX_NAME] or "review", time.time(), experiment_id))
        return report_id

    def list_reports(self) -> list[ReportRecord]:
        """Kept reports, newest first."""
        with self._read() as db:
            rows = db.execute("SELECT * FROM reports ORDER BY created DESC, rowid DESC").fetchall()
        return [ReportRecord(r["id"], r["title"], r["created"], r["experiment_id"]) for r in rows]

    def get_report(self, report_id: str) -> ReportRecord:
        """The listed report `report_id`; one message for an id of the wrong shape and for an unknown one."""
        text = str(report_id)
        row = None
        if _ID.fullmatch(text):
            with self._read() as db:
                row = db.execute("SELECT * FROM reports WHERE id = ?", (text,)).fetchone()
        if row is None:
            raise StoreError("There is no kept report with this id; open the report from the list on Experiments.")
        return ReportRecord(row["id"], row["title"], row["created"], row["experiment_id"])

    def read_report(self, report_id: str) -> str:
        """The HTML of a listed report (only ever reports/<id>.html of an id the table lists, never a link)."""
        record = self.get_report(report_id)
        path = self.reports_folder / f"{record.id}.html"
        if path.is_symlink() or not path.is_file():
            raise StoreError(f"Report {record.id} is listed but its file is gone from the data folder's reports "
                             "folder; build the review again on the Review page.")
        return path.read_text(encoding="utf-8")

    # -- metrics, samples, pruned heads, checkpoints ------------------------------------------------------------

    def log_metric(self, experiment_id: str, name: str, value: float, step: int) -> None:
        self.log_metrics(experiment_id, {name: value}, step)

    def log_metrics(self, experiment_id: str, values: Mapping[str, float], step: int) -> None:
        """Append one point per metric at `step` (non-finite values are kept as NaN)."""
        now = time.time()
        rows = [(experiment_id, name, int(step), _finite_or_none(v), now) for name, v in values.items()]
        with self._write() as db:
            db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", rows)

    def get_curves(self, experiment_id: str, names: list[str] | None = None) -> dict[str, list[MetricPoint]]:
        """Every logged metric of an experiment as {name: points in step order}."""
        query, args = "SELECT name, step, value, created FROM metrics WHERE experiment_id = ?", [experiment_id]
        if names:
            query += f" AND name IN ({', '.join('?' for _ in names)})"
            args.extend(names)
        curves: dict[str, list[MetricPoint]] = {}
        with self._read() as db:
            for row in db.execute(query + " ORDER BY name, step, rowid", args):
                value = float("nan") if row["value"] is None else row["value"]
                curves.setdefault(row["name"], []).append(MetricPoint(row["step"], value, row["created"]))
        return curves

    def log_sample(self, experiment_id: str, prompt: str, text: str, step: int = 0) -> None:
        with self._write() as db:
            db.execute("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", (experiment_id, int(step), prompt, text, time.time()))

    def get_samples(self, experiment_id: str) -> list[SampleRecord]:
        with self._read() as db:
            rows = db.execute("SELECT step, prompt, text, created FROM samples WHERE experiment_id = ? "
                              "ORDER BY step, rowid", (experiment_id,)).fetchall()
        return [SampleRecord(r["step"], r["prompt"], r["text"], r["created"]) for r in rows]

    def record_pruned_heads(self, experiment_id: str, plan: Mapping[int | str, list[int]], mode: str,
                            stage: str = "prune") -> None:
        """Record which original heads a stage pruned (mode: mask, remove, grow)."""
        now = time.time()
        rows = [(experiment_id, stage, int(layer), int(h), mode, now) for layer, heads in plan.items() for h in heads]
        with self._write() as db:
            db.executemany("INSERT INTO pruned_heads VALUES (?, ?, ?, ?, ?, ?)", rows)

    def get_pruned_heads(self, experiment_id: str) -> list[dict[str, Any]]:
        """[{stage, layer, head, mode}] in the order they were recorded."""
        with self._read() as db:
            rows = db.execute("SELECT stage, layer, head, mode FROM pruned_heads WHERE experiment_id = ? ORDER BY rowid",
                              (experiment_id,)).fetchall()
        return [dict(row) for row in rows]

    def add_checkpoint(self, experiment_id: str | None, path: str | os.PathLike, step: int,
                       job_id: str | None = None) -> None:
        with self._write() as db:
            db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                       (experiment_id, job_id, int(step), str(path), time.time()))

    def latest_checkpoint(self, experiment_id: str | None = None, job_id: str | None = None) -> CheckpointRecord | None:
        """The most recently recorded checkpoint of an experiment or a job whose folder still exists."""
        if (experiment_id is None) == (job_id is None):
            raise StoreError("latest_checkpoint needs exactly one of experiment_id or job_id.")
        column, value = ("experiment_id", experiment_id) if job_id is None else ("job_id", job_id)
        with self._read() as db:
            rows = db.execute(f"SELECT * FROM checkpoints WHERE {column} = ? ORDER BY created DESC, rowid DESC",
                              (value,)).fetchall()
        for row in rows:
            if Path(row["path"]).is_dir():
                return CheckpointRecord(row["experiment_id"], row["job_id"], row["step"], row["path"], row["created"])
        return None

    # -- jobs --------------------------------------------------------------------------------------------------

    def create_job(self, kind: str, params: Mapping[str, Any], device: str, experiment_id: str | None = None,
                   owner_token: str | None = None) -> str:
        """Record a queued job owned by this process; returns its id."""
        job_id = new_id()
        with self._write() as db:
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, 'queued', '{}', NULL, NULL, 1, ?, ?, ?, ?, NULL, NULL, 0)",
                (job_id, experiment_id, kind, _dumps(dict(params), "job params"), device, os.getpid(),
                 socket.gethostname(), owner_token, time.time()),
            )
        return job_id

    def set_job_state(self, job_id: str, state: str, error: str | None = None,
                      result: Mapping[str, Any] | None = None, owner_token: str | None = None) -> None:
        """Move a job to `state`, stamping start/finish times; requeueing (resume) bumps its attempt."""
        if state not in JOB_STATES:
            raise StoreError(f"Unknown job state {state!r}; use one of {', '.join(JOB_STATES)}.")
        now = time.time()
        with self._write() as db:
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise StoreError(f"No job {job_id!r} in {self.path}.")
            db.execute("UPDATE jobs SET state = ?, error = ? WHERE id = ?", (state, error, job_id))
            if result is not None:
                db.execute("UPDATE jobs SET result = ? WHERE id = ?", (_dumps(dict(result), "job result"), job_id))
            if state == "running":
                db.execute("UPDATE jobs SET started = ?, finished = NULL WHERE id = ?", (now, job_id))
            elif state == "queued":
                db.execute("UPDATE jobs SET attempt = attempt + 1, finished = NULL, owner_pid = ?, owner_host = ?, "
                           "owner_token = ?, cancel_requested = 0 WHERE id = ?",
                           (os.getpid(), socket.gethostname(), owner_token, job_id))
            else:
                db.execute("UPDATE jobs SET finished = ? WHERE id = ?", (now, job_id))

    def request_cancel(self, job_id: str) -> None:
        """Ask a job to stop, whichever process runs it: its runner polls `cancel_requested` at every step."""
        with self._write() as db:
            if db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,)).rowcount == 0:
                raise StoreError(f"No job {job_id!r} in {self.path}.")

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone (this process, another one, the dashboard) asked this job to stop."""
        with self._read() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def delete_metrics_after(self, experiment_id: str, step: int) -> int:
        """Drop an experiment's metric points after `step` (a resumed run logs them again); returns how many."""
        with self._write() as db:
            return db.execute("DELETE FROM metrics WHERE experiment_id = ? AND step > ?",
                              (experiment_id, int(step))).rowcount

    def update_job_progress(self, job_id: str, progress: Mapping[str, Any]) -> None:
        """Replace the job's latest progress event (step, loss, perplexity, tokens/s, ETA ...)."""
        with self._write() as db:
            db.execute("UPDATE jobs SET progress = ? WHERE id = ?", (_dumps(dict(progress), "job progress"), job_id))

    def get_job(self, job_id: str) -> JobRecord:
        with self._read() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise StoreError(f"No job {job_id!r} in {self.path}.")
        return _job(row)

    def list_jobs(self, states: list[str] | tuple[str, ...] | None = None,
                  experiment_id: str | None = None) -> list[JobRecord]:
        """Jobs, newest first, optionally only those in `states` or of one experiment."""
        query, args, where = "SELECT * FROM jobs", [], []
        if states:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            args.extend(states)
        if experiment_id is not None:
            where.append("experiment_id = ?")
            args.append(experiment_id)
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._read() as db:
            return [_job(row) for row in db.execute(query + " ORDER BY created DESC, rowid DESC", args)]

    def interrupt_orphaned_jobs(self, is_alive: Callable[[JobRecord], bool]) -> list[str]:
        """Mark queued/running jobs whose owner is gone (per `is_alive`) as interrupted; returns their ids."""
        now = time.time()
        with self._write() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state IN ('queued', 'running')").fetchall()
            gone = [row["id"] for row in rows if not is_alive(_job(row))]
            for row in rows:
                if row["id"] not in gone:
                    continue
                db.execute("UPDATE jobs SET state = 'interrupted', finished = ?, error = ? WHERE id = ?",
                           (now, "The process running this job stopped before it finished; resume it.", row["id"]))
                if row["experiment_id"] is not None:   # its experiment is no longer running either
                    db.execute("UPDATE experiments SET status = 'interrupted', updated = ? WHERE id = ?",
                               (now, row["experiment_id"]))
        for job_id in gone:
            logger.warning("Job %s was left running by a process that has stopped; marked interrupted.", job_id)
        return gone


def _experiment(row: sqlite3.Row) -> ExperimentRecord:
    return ExperimentRecord(
        id=row["id"], name=row["name"], kind=row["kind"], model=row["model"], status=row["status"],
        config=json.loads(row["config"]), summary=json.loads(row["summary"]),
        created=row["created"], updated=row["updated"], tags=json.loads(row["tags"]),
    )


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"], experiment_id=row["experiment_id"], kind=row["kind"], params=json.loads(row["params"]),
        device=row["device"], state=row["state"], progress=json.loads(row["progress"]),
        result=None if row["result"] is None else json.loads(row["result"]), error=row["error"],
        attempt=row["attempt"], owner_pid=row["owner_pid"], owner_host=row["owner_host"],
        owner_token=row["owner_token"], created=row["created"], started=row["started"], finished=row["finished"],
    )
