"""Perplexity on a model folder's own held-out split: one protocol shared by `sentinel evaluate`, the dashboard
and the model card, so one model has one number wherever it is shown."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from sentinel.data import EvalText, blocks_from_texts, describe_source, join_documents, load_texts
from sentinel.evaluation.perplexity import PerplexityResult, perplexity
from sentinel.models.positions import cap_to_positions

logger = logging.getLogger(__name__)

OWN_TEXT_MAX_WINDOW = 1024


def own_text_window(model: nn.Module) -> int:
    """The window the own-split protocol scores in: the model's positions, at most OWN_TEXT_MAX_WINDOW."""
    return cap_to_positions(model, OWN_TEXT_MAX_WINDOW)


def own_text_perplexity(model: nn.Module, tokenizer: Any, text: EvalText, max_tokens: int | None = None,
                        window: int | None = None, batch_size: int = 8) -> PerplexityResult:
    """Every token of `text` (or its first `max_tokens`) in non-overlapping windows of `own_text_window`."""
    ids = join_documents(tokenizer, load_texts(text.source))
    ids = ids[:max_tokens] if max_tokens is not None else ids
    seq_len = window if window is not None else own_text_window(model)
    result = perplexity(model, tokenizer, ids, seq_len=seq_len, batch_size=batch_size)
    logger.info("Perplexity %.3f over %d tokens of %s", result.perplexity, result.tokens_evaluated, text.name)
    return result


def text_perplexity(model: nn.Module, tokenizer: Any, text: EvalText, max_tokens: int | None = None,
                    window: int | None = None, batch_size: int = 8) -> PerplexityResult:
    """`sentinel evaluate`'s perplexity (no stride) of `model` on `text`, whichever text it is: the report and the
    CLI call this one function, so they print the same number for the same model."""
    if text.own:
        return own_text_perplexity(model, tokenizer, text, max_tokens, window, batch_size)
    seq_len = window if window is not None else own_text_window(model)
    blocks = blocks_from_texts(tokenizer, load_texts(text.source), seq_len, describe_source(text.source), max_tokens)
    return perplexity(model, tokenizer, blocks.input_ids, seq_len=seq_len, batch_size=batch_size)
