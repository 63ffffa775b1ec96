"""The `sentinel` command line: argparse over one module per command in sentinel/commands/.

Every expected failure (SentinelError, bad arguments) is one line on stderr and exit code 2; anything
unexpected is one line and exit code 1 (`--debug` shows the traceback). Parsing and `--help` never import
torch: command modules import their heavy dependencies inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
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
    "sentinel.commands.export",
    "sentinel.commands.compress",
    "sentinel.commands.jobs",
    "sentinel.commands.sparsify",
    "sentinel.commands.sensitivity",
    "sentinel.commands.quantize",
    "sentinel.commands.report",
]


class UsageError(SentinelError):
    """The command line itself is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sentinel", description="Prune transformer language models: heads, neurons, layers and weights; recover, fine-tune, export, review.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 bad input, 1 unexpected failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv   # accepted anywhere on the line, also after the command
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
        if not debug:   # log records stay one line each (a failed background job logs its exception)
            for handler in logging.getLogger().handlers:
                handler.addFilter(_without_traceback)
        if not args.verbose:  # keep stderr to our own messages: no weight-loading bars or library chatter
            _quiet_transformers()
        return int(args.func(args) or 0)
    except SentinelError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:   # a bug or an unforeseen failure: one line, and the traceback on request
        if debug:
            traceback.print_exc()
        print(f"error: unexpected {type(err).__name__}: {_one_line(err)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


def _without_traceback(record: logging.LogRecord) -> bool:
    """Log filter: drop the traceback of a record (shown with --debug only)."""
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    return True


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 500 else text[:497] + "..."


def _quiet_transformers() -> None:
    """No weight-loading bars or library chatter on stderr, without importing transformers just for that."""
    if "transformers" in sys.modules:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    else:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


if __name__ == "__main__":
    sys.exit(main())
