"""Helpers the command modules share: model and task arguments, JSON output, writable folders."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError


# argparse dest of a CLI flag -> the FineTuneConfig field it sets, one table for `finetune` and `benchmark`
# (tests/workflows checks every entry against FineTuneConfig and the benchmark's defaults against BenchmarkConfig).
FINETUNE_FLAGS = {
    "lr": "learning_rate", "batch_size": "batch_size", "grad_accum": "gradient_accumulation_steps",
    "block_size": "block_size", "warmup": "warmup_ratio", "scheduler": "lr_scheduler",
    "weight_decay": "weight_decay", "eval_every": "eval_every", "eval_tokens": "eval_max_tokens",
    "early_stopping": "early_stopping_patience", "checkpoint_every": "checkpoint_every", "distill": "distill",
    "alpha": "distill_alpha", "temperature": "distill_temperature", "mixed_precision": "mixed_precision",
    "seed": "seed", "device": "device",
}


def finetune_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The FineTuneConfig fields the parsed flags set (only the flags this command has), by FINETUNE_FLAGS."""
    return {field: getattr(args, dest) for dest, field in FINETUNE_FLAGS.items() if hasattr(args, dest)}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="hub id or folder (default: the bundled model)")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default: auto)")
    parser.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: float32 on CPU)")


def add_task_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    """--tasks and --task-limit, the same for `evaluate` and `report`."""
    parser.add_argument("--tasks", default=None,
                        help=f"comma-separated lm-eval tasks {purpose}: a bundled task (stories-gpt2-continuation, "
                             "stdlib-gpt2-continuation), a folder of task YAML, or a standard name such as arc_easy "
                             "(its data comes from the hub); needs pip install 'sentinel[eval]'")
    parser.add_argument("--task-limit", type=int, default=None,
                        help="score only the first N documents of each task (a quick check; default: all)")


def task_selection(args: argparse.Namespace) -> Any:
    """The resolved --tasks (a TaskSelection), or None; checked before any model loads, so a missing lm-eval or
    an unknown task fails at once."""
    from sentinel.errors import DataError

    if args.tasks is None:
        if args.task_limit is not None:
            raise DataError("--task-limit applies to --tasks; name the tasks to run.")
        return None
    if args.task_limit is not None and args.task_limit < 1:
        raise DataError(f"--task-limit must be at least 1, got {args.task_limit}.")
    from sentinel.evaluation.tasks import select_tasks

    return select_tasks(args.tasks.split(","))


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def writable_folder(path: str, kind: str = "model") -> Path:
    """Check that `path` may and can be written (new, empty, or Sentinel's own `kind` output) before any work."""
    from sentinel.files import check_output_folder

    folder = check_output_folder(path, kind)
    parent = folder if folder.exists() else next((p for p in folder.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise SentinelError(f"Cannot write under {parent}; choose a writable folder.")
    return folder
