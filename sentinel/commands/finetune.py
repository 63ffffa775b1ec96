"""`sentinel finetune`: fine-tune a (pruned) model, optionally distilling from the unpruned one.

Runs as a background job recorded in the experiment store (so the dashboard shows it), with a progress
bar; Ctrl-C stops after the current step and keeps a checkpoint. Under `accelerate launch -m sentinel
finetune ...` or `torchrun -m sentinel finetune ...` every process trains in the foreground instead and
only the first one records and saves. Writes <out>/model, <out>/result.json (and <out>/checkpoint when stopped).
"""

from __future__ import annotations

import argparse
import os
import sys

from typing import TYPE_CHECKING

from sentinel.commands.common import add_model_arguments, finetune_settings, print_json
from sentinel.errors import SentinelError

if TYPE_CHECKING:   # heavy modules are imported inside the functions, so `sentinel --help` stays fast
    from sentinel.store import Store
    from sentinel.training.job import FineTuneJob


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a pruned model (optionally with distillation)",
                              description=__doc__)
    add_model_arguments(p)
    p.add_argument("--steps", type=int, required=True, help="optimizer steps")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--distill", action="store_true",
                   help="distil from the unpruned model: loss = a*T^2*KL(teacher||student) + (1-a)*LM loss")
    p.add_argument("--teacher", default=None,
                   help="the unpruned teacher (default: --model with its masks lifted; required if heads were removed)")
    p.add_argument("--alpha", type=float, default=0.5, help="distillation weight a (default 0.5)")
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature T (default 2)")
    p.add_argument("--text", default=None,
                   help="training text: .txt/.jsonl/.csv file, bundled:<split> or name:config:split "
                        "(default: a model folder's own corpus/train.jsonl.gz and its validation split, else the "
                        "bundled corpus and its validation split)")
    p.add_argument("--validation-text", default=None,
                   help="validation text (default: the last 10%% of --text; without --text, the model's own or the "
                        "bundled validation split)")
    p.add_argument("--heads", default=None, help='prune these heads first, e.g. "0:1,3;5:0"')
    p.add_argument("--mode", choices=["mask", "remove"], default="mask", help="how --heads are pruned (default mask)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step per device (default 8)")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    p.add_argument("--block-size", type=int, default=128, help="tokens per training sequence (default 128)")
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction of the steps (default 0.1)")
    p.add_argument("--scheduler", choices=["linear", "cosine", "constant_with_warmup"], default="cosine",
                   help="learning-rate decay after warm-up (default cosine)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="validation perplexity every N steps (default: 5 times per run)")
    p.add_argument("--eval-tokens", type=int, default=16384, help="validation tokens per evaluation (default 16384)")
    p.add_argument("--early-stopping", type=int, default=0, metavar="N",
                   help="stop after N evaluations without improvement (default: off)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="checkpoint every N steps (default: 5 per run)")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="GPU mixed precision")
    p.add_argument("--seed", type=int, default=0, help="seed for data order and initialisation (default 0)")
    p.add_argument("--out", required=True, help="output folder (model/, result.json, checkpoint/)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def build_job(args: argparse.Namespace) -> FineTuneJob:
    """The FineTuneJob the arguments describe; bad values raise a SentinelError before anything loads."""
    from sentinel.commands.jobrun import output_folder
    from sentinel.data import finetune_text_sources
    from sentinel.pruning import parse_plan_text
    from sentinel.pruning.plan import plan_to_json
    from sentinel.training.config import FineTuneConfig
    from sentinel.training.job import FineTuneJob

    if args.steps <= 0:
        raise SentinelError(f"--steps must be at least 1, got {args.steps}.")
    fifth = max(1, args.steps // 5)
    settings = finetune_settings(args)   # every fine-tuning flag, by the one table in commands/common.py
    settings.update(eval_every=args.eval_every or fifth, checkpoint_every=args.checkpoint_every or fifth)
    config = FineTuneConfig(max_steps=args.steps, **settings)
    config.validate()
    plan = plan_to_json(parse_plan_text(args.heads)) if args.heads else None
    out = output_folder(args.out)
    text, validation = finetune_text_sources(args.model, args.text, args.validation_text)
    return FineTuneJob(out=str(out), config=config, model=args.model, text=text,
                       validation_text=validation, teacher=args.teacher, prune_plan=plan,
                       prune_mode=args.mode, dtype=args.dtype)


def run(args: argparse.Namespace) -> int:
    from sentinel.commands.jobrun import run_in_foreground
    from sentinel.store import Store

    job = build_job(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _run_distributed(job, args)
    store = Store()
    experiment = _record(store, job)
    record, stopped = run_in_foreground(store, "finetune", job.to_dict(), args.device, experiment, "fine-tuning")
    if record.state == "failed":
        return 1
    summary = {**(record.result or {}), "experiment": experiment, "job": record.id, "state": record.state}
    if args.json:
        print_json(summary)
    elif record.state == "cancelled":
        checkpoint = store.latest_checkpoint(job_id=record.id)
        where = f"; checkpoint at {checkpoint.path} (step {checkpoint.step})" if checkpoint else ""
        print(f"stopped at step {summary.get('steps', '?')}{where}; resume job {record.id} from the dashboard")
    else:
        print(_describe(summary))
    return 130 if stopped else 0


def _record(store: Store, job: FineTuneJob) -> str:
    """The experiment record of this fine-tune (its config in the keys the dashboard reads)."""
    config = job.config
    return store.create_experiment(
        f"finetune {job.model or 'bundled model'} ({config.max_steps} steps{', distilled' if config.distill else ''})",
        {"model": job.model, "steps": config.max_steps, "learning_rate": config.learning_rate,
         "distill": config.distill, "batch_size": config.batch_size, "block_size": config.block_size,
         "text": job.text, "heads": job.prune_plan, "mode": job.prune_mode, "finetune": config.to_dict()},
        kind="finetune", model=job.model)


def _describe(summary: dict) -> str:
    return (f"fine-tuned {summary['steps']} steps ({summary['stopped']}): validation perplexity "
            f"{summary['perplexity_before']:.3f} -> {summary['perplexity_after']:.3f}; "
            f"training loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}; "
            f"{summary['train_tokens_per_second']:.0f} tokens/s; saved to {summary['model']}")


def _run_distributed(job: FineTuneJob, args: argparse.Namespace) -> int:
    """One process of a multi-process launch: train in the foreground; only rank 0 records, saves and prints."""
    from sentinel.jobs import ProgressEvent
    from sentinel.store import Store
    from sentinel.training.job import run_finetune

    first = int(os.environ.get("RANK", "0")) == 0
    store = Store() if first else None
    experiment = _record(store, job) if store is not None else None

    def report(event: ProgressEvent) -> None:
        if store is not None and event.metrics():
            store.log_metrics(experiment, event.metrics(), event.step)

    summary = run_finetune(job, args.device, report=report)
    if store is not None:
        store.update_experiment(experiment, status=summary["stopped"], summary=summary)
        if args.json:
            print_json({**summary, "experiment": experiment})
        else:
            print(_describe(summary), file=sys.stdout)
    return 0
