"""`python -m sentinel.demo build|card ...`: build the bundled demo model or (re)write its model card."""

from __future__ import annotations

import argparse
import logging
import sys

from sentinel.demo import build
from sentinel.errors import SentinelError


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it; SentinelError becomes a one-line message and exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m sentinel.demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build_parser = sub.add_parser("build", help="train the demo tokenizer and model")
    build.add_arguments(build_parser)
    build_parser.set_defaults(func=build.run)
    card_parser = sub.add_parser("card", help="evaluate a built demo model and write its README.md")
    card_parser.add_argument("--out", default=build.DemoBuildConfig().out_dir, help="demo model folder")
    card_parser.set_defaults(func=_run_card)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return args.func(args)
    except SentinelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run_card(args: argparse.Namespace) -> int:
    """Evaluate the model in `args.out` and write its card."""
    from sentinel.demo.card import finish_model_card

    finish_model_card(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
