"""The `sentinel` command line: argparse over one module per command in sentinel/commands/.

Every expected failure (SentinelError, bad arguments) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sentinel.errors import SentinelError

# One entry per command module; each module has `register(subparsers)` setting `func=run`.
COMMAND_MODULES = [
    "sentinel.commands.prune",
    "sentinel.commands.analyze",
    "sentinel.commands.evaluate",
    "sentinel.commands.generate",
    "sentinel.commands.finetune",
    "sentinel.commands.benchmark",
    "sentinel.commands.build_demo_model",
    "sentinel.commands.sparsify",
    "sentinel.commands.sensitivity",
    "sentinel.commands.quantize",
]


class UsageError(SentinelError):
    """The command line itself is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sentinel", description="Prune the attention heads of transformer language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 bad input, 1 unexpected failure)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
        if not args.verbose:  # keep stderr to our own messages: no weight-loading bars or library chatter
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
        return int(args.func(args) or 0)
    except SentinelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
