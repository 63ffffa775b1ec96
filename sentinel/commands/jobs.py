"""`sentinel jobs`: list background jobs, resume an interrupted/cancelled/failed one, or cancel one.

Jobs live in the experiment store ($SENTINEL_HOME/sentinel.db), so this works on jobs started by the dashboard
or by another `sentinel` process: `cancel` records the request in the store and the process running the job
stops after its current step.
"""

from __future__ import annotations

import argparse
import time

from sentinel.commands.common import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("jobs", help="list, resume or cancel background jobs", description=__doc__)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    ls = actions.add_parser("list", help="jobs, newest first")
    ls.add_argument("--state", action="append", default=None,
                    help="only jobs in this state (queued, running, succeeded, failed, cancelled, interrupted); "
                         "repeatable")
    ls.add_argument("--json", action="store_true", help="print the jobs as JSON")
    resume = actions.add_parser("resume", help="run an interrupted, cancelled or failed job again from its last "
                                               "checkpoint, in the foreground")
    resume.add_argument("job_id", metavar="ID")
    cancel = actions.add_parser("cancel", help="ask a queued or running job to stop (any process)")
    cancel.add_argument("job_id", metavar="ID")
    cancel.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for the job to stop (default: do not wait)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sentinel.store import Store

    store = Store()
    if args.action == "list":
        return _list(store, args)
    if args.action == "resume":
        return _resume(store, args.job_id)
    return _cancel(store, args.job_id, args.wait)


def _list(store, args: argparse.Namespace) -> int:
    from sentinel.errors import JobError
    from sentinel.jobs import JobManager
    from sentinel.store import JOB_STATES

    for state in args.state or []:
        if state not in JOB_STATES:
            raise JobError(f"Unknown job state {state!r}; use one of {', '.join(JOB_STATES)}.")
    JobManager(store).shutdown()   # jobs whose process has stopped are shown as interrupted, not running
    jobs = store.list_jobs(args.state)
    if args.json:
        print_json([{"id": j.id, "kind": j.kind, "state": j.state, "step": j.progress.get("step"),
                     "total_steps": j.progress.get("total_steps"), "experiment": j.experiment_id,
                     "attempt": j.attempt, "created": j.created, "error": j.error} for j in jobs])
        return 0
    if not jobs:
        print(f"no jobs in {store.path}")
        return 0
    width = max(len("kind"), *(len(job.kind) for job in jobs))   # dashboard kinds are longer than the CLI's own
    print(f"{'id':<12}  {'kind':<{width}} {'state':<11} {'progress':>11}  {'created':<16}  experiment")
    for job in jobs:
        step, total = job.progress.get("step"), job.progress.get("total_steps")
        progress = "" if step is None else (f"{step}/{total}" if total else str(step))
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created))
        print(f"{job.id:<12}  {job.kind:<{width}} {job.state:<11} {progress:>11}  {created:<16}  {job.experiment_id or ''}")
    return 0


def _resume(store, job_id: str) -> int:
    from sentinel.commands.jobrun import run_in_foreground
    from sentinel.jobs import JobManager

    job = store.get_job(job_id)
    JobManager(store).shutdown()   # marks jobs whose process has stopped as interrupted, so they can resume
    record, stopped = run_in_foreground(store, job.kind, job.params, job.device, job.experiment_id,
                                        f"resuming {job.kind} {job.id}", resume=job.id)
    print(f"job {record.id}: {record.state}" + (f" ({record.error})" if record.error else ""))
    if record.state == "failed":
        return 1
    return 130 if stopped else 0


def _cancel(store, job_id: str, wait: float) -> int:
    from sentinel.jobs import JobManager

    manager = JobManager(store)
    try:
        job = store.get_job(job_id)
        if job.state not in ("queued", "running"):
            print(f"job {job_id} is {job.state}; nothing to cancel")
            return 0
        manager.cancel(job_id)
        if wait > 0:
            job = manager.wait(job_id, timeout=wait)
            print(f"job {job_id}: {job.state}")
        else:
            print(f"cancel requested: job {job_id} stops after its current step")
    finally:
        manager.shutdown()
    return 0
