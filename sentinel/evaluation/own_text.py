"""Perplexity on a model's held-out text (by default its folder's own split): one protocol shared by `sentinel
evaluate`, the dashboard, the review and the model card, so one model has one number wherever it is shown."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from sentinel.data import EvalText, join_documents, load_texts
from sentinel.evaluation.perplexity import PerplexityResult, perplexity
from sentinel.models.positions import cap_to_positions

logger = logging.getLogger(__name__)

OWN_TEXT_MAX_WINDOW = 1024


def own_text_window(model: nn.Module) -> int:
    """The window the own-split protocol scores in: the model's positions, at most OWN_TEXT_MAX_WINDOW."""
    return cap_to_positions(model, OWN_TEXT_MAX_WINDOW)


def text_perplexity(model: nn.Module, tokenizer: Any, text: EvalText, max_tokens: int | None = None,
                    window: int | None = None, batch_size: int = 8) -> PerplexityResult:
    """Every token of `text` (or its first `max_tokens`) in non-overlapping windows of `own_text_window`: the one
    measurement `sentinel evaluate`, the dashboard's own-split protocol and `sentinel report` share."""
    ids = join_documents(tokenizer, load_texts(text.source))
    ids = ids[:max_tokens] if max_tokens is not None else ids
    seq_len = window if window is not None else own_text_window(model)
    result = perplexity(model, tokenizer, ids, seq_len=seq_len, batch_size=batch_size)
    logger.info("Perplexity %.3f over %d tokens of %s", result.perplexity, result.tokens_evaluated, text.name)
    return result
