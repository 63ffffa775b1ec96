"""The one exception hierarchy of the library: every message says what was wrong and what to do."""

from __future__ import annotations


class SentinelError(Exception):
    """Base class for every error Sentinel raises on purpose."""


class UnsupportedModelError(SentinelError):
    """The model's attention layout is not one Sentinel knows how to prune."""


class ModelLoadError(SentinelError):
    """A model or tokenizer could not be loaded (missing folder, offline hub id, bad files)."""


class InvalidPruningPlan(SentinelError, ValueError):
    """A head plan names heads that do not exist or breaks a rule (min_heads, grouped-query attention)."""


class DataError(SentinelError, ValueError):
    """Text input is empty, binary, not UTF-8, or lacks the requested column."""


class JobError(SentinelError):
    """A background job could not be queued, found or resumed."""
