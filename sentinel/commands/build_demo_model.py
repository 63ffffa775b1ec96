"""`sentinel build-demo-model`: rebuild the bundled demo model (corpus, tokenizer, training, card)."""

from __future__ import annotations

import argparse

from sentinel.demo import build


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build-demo-model", help="train the bundled demo model from the stdlib docstrings",
                              description=build.__doc__)
    build.add_arguments(p)
    p.set_defaults(func=build.run)
