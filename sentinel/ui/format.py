"""Plain-language formatting for the dashboard: numbers, error messages, and word-level text differences."""

from __future__ import annotations

import math
from typing import Any

import torch

from sentinel.errors import SentinelError
from sentinel.files import redact_server_paths
from sentinel.textdiff import word_diff_html  # noqa: F401  (the pages' import; one implementation)

OUT_OF_MEMORY_ADVICE = (
    "Try a shorter sample text or fewer samples, close other sessions' jobs, choose the CPU device, "
    "or load a smaller model."
)


def human_count(n: int | float) -> str:
    """12_345_678 → '12.35 M', 5_120 → '5.12 k', 42 → '42'."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.2f} {suffix}"
    return f"{n:g}"


def plural(count: int, noun: str) -> str:
    """'1 pruning step', '3 pruning steps': a count with its noun in the right number."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def human_bytes(n: int) -> str:
    """Bytes in MiB/GiB with two decimals."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    return f"{n / (1 << 20):.2f} MiB"


def signed_percent(before: float, after: float) -> str:
    """Relative change from `before` to `after`, e.g. '+12.5%' (empty when it cannot be computed). A change under
    0.1% keeps two significant digits ('-0.031%'), so a small change never reads as '-0.0%'."""
    if before == 0 or not (math.isfinite(before) and math.isfinite(after)):
        return ""
    change = (after - before) / before * 100
    if change == 0:
        return "0%"
    return f"{change:+.2g}%" if abs(change) < 0.1 else f"{change:+.1f}%"


def plain_error(error: BaseException, doing: str) -> str:
    """A message a non-programmer can act on, for the errors the dashboard expects while `doing` something.

    Anything else is a bug and is not turned into a message here (the caller lets it propagate).
    """
    if isinstance(error, torch.OutOfMemoryError):
        return f"The device ran out of memory while {doing}. {OUT_OF_MEMORY_ADVICE}"
    if isinstance(error, MemoryError):
        return f"This computer ran out of memory while {doing}. {OUT_OF_MEMORY_ADVICE}"
    if isinstance(error, SentinelError):
        return redact_server_paths(f"Could not finish {doing}: {error}")
    if isinstance(error, OSError):   # the file name stays in the server log, not on the visitor's screen
        return f"Could not finish {doing}: {error.strerror or type(error).__name__}."
    raise TypeError(f"plain_error() does not describe {type(error).__name__}; let it propagate.") from error


def job_failure(job: Any) -> str:
    """Why a background job (a `JobRecord`) ended without a result, as a visitor may read it: the server's folders
    replaced by their roles, and an expected failure (bad input: its message says what to do) without its class
    name."""
    text = job.error or "no result"
    result = job.result or {}
    if result.get("bad_input") and result.get("error_type"):
        text = text.removeprefix(f"{result['error_type']}: ")
    return redact_server_paths(text)


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (SentinelError, torch.OutOfMemoryError, MemoryError, OSError)


def shared_prefix_words(reference: str, other: str) -> int:
    """How many leading words two texts share (a plain measure of 'where they start to differ')."""
    count = 0
    for a, b in zip(reference.split(), other.split()):
        if a != b:
            break
        count += 1
    return count
