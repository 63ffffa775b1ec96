"""`sentinel build-demo-model`: rebuild a bundled demo model (corpus, tokenizer, training, card); --recipe picks which."""

from __future__ import annotations

import argparse

from sentinel.demo import build


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build-demo-model", help="rebuild a bundled demo model (--recipe stories-gpt2 or stdlib-gpt2)",
                              description=build.__doc__)
    build.add_arguments(p)
    p.set_defaults(func=build.run)
