"""This task's items, read from items.jsonl beside this file (lm-eval resolves `!function items.load` here, so
the task runs from any working directory)."""

import json
from pathlib import Path

import datasets


def load(**_metadata):
    """The test split; lm-eval passes the task's metadata as keywords, which the items do not need."""
    path = Path(__file__).with_name("items.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {"test": datasets.Dataset.from_list(rows)}
