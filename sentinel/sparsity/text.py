"""Calibration and evaluation text for the sparsity commands, through sentinel.data and sentinel.evaluation.

Calibration defaults to the bundled corpus's train split (what the model was trained on), evaluation to
its validation split, so the text used to choose weights is never the text they are judged on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sentinel.data import cut_blocks, join_documents, load_texts
from sentinel.errors import DataError
from sentinel.evaluation.perplexity import perplexity

DEFAULT_CALIBRATION = "bundled:train"


def calibration_blocks(tokenizer: Any, source: str | None = None, blocks: int = 16, seq_len: int = 128) -> torch.Tensor:
    """LongTensor [blocks, seq_len] from the start of `source` (default: the bundled train split)."""
    if blocks < 1 or seq_len < 2:
        raise DataError(f"Calibration needs at least 1 block of at least 2 tokens, got {blocks} x {seq_len}.")
    texts = load_texts(source or DEFAULT_CALIBRATION)
    wanted, chosen, chars = blocks * seq_len, [], 0
    for text in texts:                      # tokenise only what is needed (~1 token per 2+ characters)
        chosen.append(text)
        chars += len(text)
        if chars >= 8 * wanted:
            break
    ids = join_documents(tokenizer, chosen)
    cut = cut_blocks(ids, seq_len)[:blocks]
    if len(cut) < blocks:
        raise DataError(f"{source or DEFAULT_CALIBRATION} gives only {len(cut)} calibration blocks of {seq_len} tokens; "
                        f"ask for fewer (--calibration-blocks) or give more text.")
    return torch.tensor(cut, dtype=torch.long)


def evaluator(tokenizer: Any, source: str | None = None, seq_len: int = 256, max_tokens: int | None = None,
              batch_size: int = 8) -> tuple[Callable[[nn.Module], float], dict[str, Any]]:
    """(model -> perplexity, description) over `source` (default: the bundled validation split)."""
    ids = join_documents(tokenizer, load_texts(source))
    if max_tokens is not None:
        ids = ids[:max_tokens]
    blocks = cut_blocks(ids, seq_len, keep_remainder=True)
    if not blocks:
        raise DataError("The evaluation text is shorter than 2 tokens; give more text.")

    def evaluate(model: nn.Module) -> float:
        return perplexity(model, tokenizer, blocks, seq_len=seq_len, batch_size=batch_size).perplexity

    return evaluate, {"text": source or "bundled:validation", "tokens": len(ids), "seq_len": seq_len}
