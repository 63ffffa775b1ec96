"""Helpers the command modules share: model arguments, JSON output, writable folders."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="hub id or folder (default: the bundled model)")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default: auto)")
    parser.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: float32 on CPU)")


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
