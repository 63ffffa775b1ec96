"""Background jobs: long work (fine-tunes, experiments, scans) runs on worker threads, recorded in the store.

A job is a registered *kind* plus JSON params, so the store alone is enough to resume it after a crash.
By default one job runs at a time per device; others wait in a bounded queue. A runner is
`fn(params: dict, ctx: JobContext) -> dict` (its result); it reports progress with `ctx.report(...)`,
records checkpoints with `ctx.checkpoint(...)`, and stops soon after `ctx.cancelled` turns true.

States: queued -> running -> succeeded | failed | cancelled. A job left queued/running by a process that
has died is marked `interrupted` when a JobManager next opens the store; `resume(job_id)` queues it again
(same id, attempt + 1) and its runner finds the last checkpoint in `ctx.resume_checkpoint`.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sentinel.device import pick_device
from sentinel.errors import JobError, SentinelError
from sentinel.files import pid_alive, remove_owned_folder
from sentinel.store import FINISHED_STATES, CheckpointRecord, JobRecord, Store

logger = logging.getLogger(__name__)

JobRunner = Callable[[dict[str, Any], "JobContext"], Mapping[str, Any] | None]
Listener = Callable[[str, dict[str, Any]], None]

# Built-in kinds, imported only when a job of that kind runs (so importing this module stays cheap).
JOB_KINDS: dict[str, str | JobRunner] = {
    "finetune": "sentinel.training.job:run_finetune_job",
    "experiment": "sentinel.workflows.experiment:run_experiment_job",
    "benchmark": "sentinel.workflows.benchmark:run_benchmark_job",
    "plasticity": "sentinel.workflows.plasticity:run_plasticity_job",
    "compress": "sentinel.workflows.compress:run_compress_job",
    "dashboard-finetune": "sentinel.ui.finetune:run_dashboard_finetune",
    "strategy-compare": "sentinel.ui.strategies:run_strategy_compare_job",
    "target-prune": "sentinel.ui.target_prune:run_target_prune_job",
    "weights-sensitivity": "sentinel.ui.weights_sensitivity:run_sensitivity_job",
    "weights-gradual": "sentinel.ui.weights:run_gradual_job",
    "compare-speed": "sentinel.ui.compare:run_speed_job",
    "unit-metrics": "sentinel.ui.metric_jobs:run_unit_metrics_job",
    "weights-speed": "sentinel.ui.weights:run_sparse_speed_job",
}
RESUMABLE_STATES = ("interrupted", "cancelled", "failed")
# params key: folders Sentinel saved as a job's input only (e.g. the dashboard's copy of the session's model). The
# manager removes them when the job ends in any state (succeeded, failed, cancelled, even before it started), and
# only if they carry Sentinel's marker; an interrupted job keeps them so it can be resumed.
INPUT_COPIES = "input_copies"
CANCEL_POLL_SECONDS = 0.2   # how often a running job reads the store for a cancel request from another process

_LIVE_MANAGERS: set[str] = set()   # owner tokens of the managers running in this process
_LIVE_LOCK = threading.Lock()


def register_job_kind(name: str, runner: JobRunner | str) -> None:
    """Make `name` runnable as a job: a runner function, or "module:function" imported when first needed."""
    JOB_KINDS[name] = runner


@dataclass
class ProgressEvent:
    """A progress report from a running job; None fields were not measured at this point."""

    step: int
    total_steps: int | None = None
    loss: float | None = None
    val_perplexity: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProgressEvent:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def metrics(self) -> dict[str, float]:
        """The numeric measurements of this event, for the store's time series."""
        keys = ("loss", "val_perplexity", "learning_rate", "tokens_per_second")
        return {k: float(getattr(self, k)) for k in keys if getattr(self, k) is not None}


class JobCancelled(Exception):
    """Raised by a runner (or `ctx.raise_if_cancelled`) to stop because the job was cancelled."""


@dataclass
class JobContext:
    """What a runner gets besides its params: progress reporting, cancellation, checkpoints, the store."""

    job_id: str
    experiment_id: str | None
    device: str
    attempt: int
    store: Store
    resume_checkpoint: CheckpointRecord | None
    _cancel: threading.Event
    _notify: Callable[[str, dict[str, Any]], None]
    _polled: float = 0.0

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled here or through the store (another process, the dashboard, the CLI).

        Runners ask at every step; the store is read at most every CANCEL_POLL_SECONDS.
        """
        if self._cancel.is_set():
            return True
        now = time.monotonic()
        if now - self._polled >= CANCEL_POLL_SECONDS:
            self._polled = now
            if self.store.cancel_requested(self.job_id):
                self._cancel.set()
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(self.job_id)

    def report(self, event: ProgressEvent, record_metrics: bool = True) -> None:
        """Record a progress event: latest progress on the job, metric points on its experiment (unless the
        runner records them itself: record_metrics=False), listeners."""
        data = event.to_dict()
        self.store.update_job_progress(self.job_id, data)
        if record_metrics and self.experiment_id is not None and event.metrics():
            self.store.log_metrics(self.experiment_id, event.metrics(), event.step)
        self._notify(self.job_id, {"type": "progress", **data})

    def checkpoint(self, path: str | os.PathLike, step: int) -> None:
        """Record a checkpoint folder (already written atomically by save_model) as this job's latest."""
        self.store.add_checkpoint(self.experiment_id, str(Path(path).resolve()), step, job_id=self.job_id)
        self._notify(self.job_id, {"type": "checkpoint", "path": str(path), "step": step})


@dataclass
class _Queued:
    job_id: str
    cancel: threading.Event


class JobManager:
    """Runs jobs on worker threads, `jobs_per_device` at a time per device, with at most `max_queued` waiting."""

    def __init__(self, store: Store | None = None, max_queued: int = 8, jobs_per_device: int = 1) -> None:
        if max_queued < 1 or jobs_per_device < 1:
            raise JobError("max_queued and jobs_per_device must both be at least 1.")
        self.store = store if store is not None else Store()
        self.max_queued = max_queued
        self.jobs_per_device = jobs_per_device
        self.token = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._queues: dict[str, queue.Queue[_Queued | None]] = {}
        self._workers: dict[str, list[threading.Thread]] = {}
        self._cancels: dict[str, threading.Event] = {}
        self._done: dict[str, threading.Event] = {}
        self._listeners: list[Listener] = []
        self._waiting: set[str] = set()   # queued here and not yet picked up or cancelled
        self._closed = False
        with _LIVE_LOCK:
            _LIVE_MANAGERS.add(self.token)
        self.interrupted = self.store.interrupt_orphaned_jobs(_owner_alive)

    # -- public API -----------------------------------------------------------------------------------------

    def submit(self, kind: str, params: Mapping[str, Any], device: str = "auto",
               experiment_id: str | None = None) -> str:
        """Queue a job of a registered kind; returns its id (raises JobError when the queue is full)."""
        if kind not in JOB_KINDS:
            raise JobError(f"Unknown job kind {kind!r}; known kinds: {', '.join(sorted(JOB_KINDS))}.")
        key = device_key(device)
        with self._lock:
            self._check_room()
            job_id = self.store.create_job(kind, {**params, "device": device}, key, experiment_id, self.token)
            self._enqueue(job_id, key)
        return job_id

    def resume(self, job_id: str) -> None:
        """Queue an interrupted, cancelled or failed job again; its runner resumes from the last checkpoint."""
        job = self.store.get_job(job_id)
        if job.state not in RESUMABLE_STATES:
            raise JobError(f"Job {job_id} is {job.state}; only {', '.join(RESUMABLE_STATES)} jobs can be resumed.")
        with self._lock:
            self._check_room()
            self.store.set_job_state(job_id, "queued", owner_token=self.token)
            self._enqueue(job_id, job.device)

    def cancel(self, job_id: str) -> None:
        """Cancel a job: a queued one never starts, a running one stops within one training step.

        A job of another process is cancelled through the store; that process sees it at its next step.
        """
        job = self.store.get_job(job_id)
        if job.state in FINISHED_STATES or job.state == "interrupted":
            return
        with self._lock:
            event = self._cancels.get(job_id)
            if event is not None:   # ours: stop now (the store is told below, for every other reader)
                event.set()
                if job_id in self._waiting:
                    self._waiting.discard(job_id)
                    self._remove_inputs(job_id)
                    self.store.set_job_state(job_id, "cancelled", error="Cancelled before it started.")
                    self._set_experiment_status(job_id, "cancelled")
                    self._notify(job_id, {"type": "state", "state": "cancelled"})
                    self._finish(job_id)
        self.store.request_cancel(job_id)   # a job of another process polls this at its next step

    def get(self, job_id: str) -> JobRecord:
        return self.store.get_job(job_id)

    def list(self, states: list[str] | None = None) -> list[JobRecord]:
        return self.store.list_jobs(states)

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job has finished (or `timeout` seconds passed); returns its record."""
        done = self._done.get(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        if done is not None:
            done.wait(timeout)
            return self.store.get_job(job_id)
        while True:   # a job of another process: poll the store
            job = self.store.get_job(job_id)
            if job.state in FINISHED_STATES or job.state == "interrupted":
                return job
            if deadline is not None and time.monotonic() >= deadline:
                return job
            time.sleep(0.1)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(job_id, event)` for every state change and progress event (from worker threads)."""
        self._listeners.append(listener)

    def shutdown(self, cancel: bool = True, wait: bool = True, timeout: float | None = None) -> None:
        """Stop accepting jobs; cancel what is queued or running (unless cancel=False) and join the workers."""
        with self._lock:
            self._closed = True
            if cancel:
                for job_id, event in self._cancels.items():
                    event.set()
                    if job_id in self._waiting:
                        self._remove_inputs(job_id)
                        self.store.set_job_state(job_id, "cancelled", error="The job manager shut down.")
                        self._set_experiment_status(job_id, "cancelled")
                        self._done[job_id].set()
                self._waiting.clear()
            for q in self._queues.values():
                for _ in range(self.jobs_per_device):
                    q.put(None)
            workers = [t for threads in self._workers.values() for t in threads]
        if wait:
            for thread in workers:
                thread.join(timeout)
        with _LIVE_LOCK:
            _LIVE_MANAGERS.discard(self.token)

    def __enter__(self) -> JobManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- internals ------------------------------------------------------------------------------------------

    def _check_room(self) -> None:
        if self._closed:
            raise JobError("This job manager has been shut down; create a new one.")
        if len(self._waiting) >= self.max_queued:
            raise JobError(f"The job queue is full ({self.max_queued} waiting); wait for a job to finish "
                           "or cancel one.")

    def _enqueue(self, job_id: str, key: str) -> None:
        cancel = threading.Event()
        self._cancels[job_id] = cancel
        self._done[job_id] = threading.Event()
        self._waiting.add(job_id)
        if key not in self._queues:
            self._queues[key] = queue.Queue()
            self._workers[key] = [
                threading.Thread(target=self._work, args=(key,), name=f"sentinel-job-{key}-{i}", daemon=True)
                for i in range(self.jobs_per_device)
            ]
            for thread in self._workers[key]:
                thread.start()
        self._queues[key].put(_Queued(job_id, cancel))
        self._notify(job_id, {"type": "state", "state": "queued"})

    def _remove_inputs(self, job_id: str) -> None:
        """Remove the job's `INPUT_COPIES` (only folders Sentinel wrote; `remove_owned_folder` checks the marker)."""
        for folder in self.store.get_job(job_id).params.get(INPUT_COPIES, ()):
            if remove_owned_folder(folder):
                logger.info("Job %s ended; removed its input copy %s", job_id, folder)

    def _finish(self, job_id: str) -> None:
        self._cancels.pop(job_id, None)
        self._done[job_id].set()

    def _notify(self, job_id: str, event: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(job_id, event)
            except Exception:   # a broken listener must not stop the job; say so loudly
                logger.exception("Job listener %r failed on %s", listener, event)

    def _work(self, key: str) -> None:
        q = self._queues[key]
        while True:
            item = q.get()
            if item is None:
                return
            with self._lock:
                if item.job_id not in self._waiting:
                    continue   # cancelled while waiting; already recorded
                self._waiting.discard(item.job_id)
            if self.store.cancel_requested(item.job_id):   # cancelled from another process while queued
                self._remove_inputs(item.job_id)
                self.store.set_job_state(item.job_id, "cancelled", error="Cancelled before it started.")
                self._set_experiment_status(item.job_id, "cancelled")
                self._notify(item.job_id, {"type": "state", "state": "cancelled"})
                with self._lock:
                    self._finish(item.job_id)
                continue
            self._run(item)

    def _set_experiment_status(self, job_id: str, status: str) -> None:
        """Make the job's experiment (if any) say how the job ended, so no record stays "running"."""
        job = self.store.get_job(job_id)
        if job.experiment_id is not None:
            self.store.update_experiment(job.experiment_id, status=status)

    def _run(self, item: _Queued) -> None:
        job = self.store.get_job(item.job_id)
        self.store.set_job_state(job.id, "running")
        self._notify(job.id, {"type": "state", "state": "running"})
        resume = self.store.latest_checkpoint(job_id=job.id) if job.attempt > 1 else None
        if job.attempt > 1 and job.experiment_id is not None:   # the resumed run logs these steps again
            dropped = self.store.delete_metrics_after(job.experiment_id, resume.step if resume else -1)
            logger.info("Job %s resumes at step %s; dropped %d metric points logged after it", job.id,
                        resume.step if resume else 0, dropped)
        ctx = JobContext(job.id, job.experiment_id, job.device, job.attempt, self.store, resume, item.cancel,
                         self._notify)
        state, error, result = "succeeded", None, None
        try:
            outcome = resolve_runner(job.kind)(dict(job.params), ctx)
            result = dict(outcome or {})
            if item.cancel.is_set():
                state = "cancelled"
        except JobCancelled:
            state = "cancelled"
        except BaseException as err:   # record every failure; the worker (and the process) keep going
            if isinstance(err, SentinelError):
                logger.info("Job %s (%s) stopped on bad input: %s", job.id, job.kind, err)
            else:
                logger.exception("Job %s (%s) failed", job.id, job.kind)
            state, error = "failed", f"{type(err).__name__}: {err}"
            # A SentinelError is bad input (its message says what to do); anything else is a bug or a crash.
            result = {"error_type": type(err).__name__, "bad_input": isinstance(err, SentinelError)}
        if state == "cancelled":
            error = "Cancelled by the user."
        self._remove_inputs(job.id)        # before the state: whoever sees it ended finds the copies gone
        self.store.set_job_state(job.id, state, error=error, result=result)
        if state in ("failed", "cancelled"):
            self._set_experiment_status(job.id, state)
        self._notify(job.id, {"type": "state", "state": state, "error": error})
        with self._lock:
            self._finish(job.id)


def resolve_runner(kind: str) -> JobRunner:
    """The runner function of a job kind, importing "module:function" entries on first use."""
    target = JOB_KINDS.get(kind)
    if target is None:
        raise JobError(f"Unknown job kind {kind!r}; known kinds: {', '.join(sorted(JOB_KINDS))}.")
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module_name), attr)
        JOB_KINDS[kind] = target
    return target


def device_key(device: str | None) -> str:
    """The concrete device a job runs on ("cpu", "cuda:0", "mps"), which also names its queue."""
    resolved = pick_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return "cuda:0"
    return str(resolved)


def _owner_alive(job: JobRecord) -> bool:
    """Whether the process (and, for this process, the manager) that owns a queued/running job still runs."""
    if job.owner_host != socket.gethostname() or job.owner_pid is None:
        return True   # another machine sharing the folder: it cannot be checked from here
    if job.owner_pid == os.getpid():
        with _LIVE_LOCK:
            return job.owner_token in _LIVE_MANAGERS
    return pid_alive(job.owner_pid)


