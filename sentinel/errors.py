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


class InvalidOutputError(SentinelError):
    """An output path Sentinel will not write to: it holds files Sentinel did not write, or is cwd/home/root."""


class ForbiddenPathError(SentinelError):
    """A dashboard visitor asked for a folder outside the allowed model roots."""


class UnsafeModelError(ModelLoadError):
    """A model folder whose weights exist only as pickle files (or that asks to run its own code): refused unread."""


class CorruptModelError(ModelLoadError):
    """A model file is truncated, corrupt, or its shapes do not match the config (or the tokenizer is unreadable)."""


class MissingDependencyError(SentinelError):
    """An optional feature's package is not installed; the message names the extra to install."""
