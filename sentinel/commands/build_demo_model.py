"""`sentinel build-demo-model`: rebuild the bundled demo model (corpus, tokenizer, training, card)."""

from __future__ import annotations

import argparse

from sentinel.demo import config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build-demo-model", help="train the bundled demo model from the stdlib docstrings",
                              description="Build the bundled demo model: corpus from the standard library's "
                                          "docstrings, tokenizer, training, evaluation and model card.")
    config.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the demo model (torch is imported only now)."""
    from sentinel.demo import build
    from sentinel.files import check_output_folder

    check_output_folder(args.out, "model")   # new, empty or an earlier Sentinel model: never a user's folder
    return build.run(args)
