"""`sentinel build-demo-model`: rebuild a bundled demo model (corpus, tokenizer, training, card); --recipe picks which."""

from __future__ import annotations

import argparse

from sentinel.demo import config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build-demo-model",
                              help="rebuild a bundled demo model (--recipe stories-gpt2 or stdlib-gpt2)",
                              description="Build a bundled demo model: corpus (standard-library docstrings or "
                                          "seeded stories), tokenizer, training, evaluation and model card.")
    config.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the demo model (torch is imported only now)."""
    from sentinel.demo import build
    from sentinel.files import check_output_folder

    check_output_folder(config.config_from_args(args).out_dir, "model")   # never a user's folder
    return build.run(args)
