"""Honest perplexity: exp(mean NLL) over every scored token, each token scored once, padding never counted."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sentinel.errors import DataError, UnsupportedModelError

logger = logging.getLogger(__name__)


@dataclass
class PerplexityResult:
    """Perplexity over `tokens_evaluated` predicted tokens; `nll` is the mean negative log-likelihood in nats."""

    perplexity: float
    nll: float
    tokens_evaluated: int
    window_length: int
    stride: int
    seconds: float = 0.0
    ci_low: float | None = None    # 95% bootstrap interval over the scored windows (None: fewer than 2 windows)
    ci_high: float | None = None

    def interval(self) -> str:
        """'95% CI 1.43–1.45' for the screen and the report; '' when there were too few windows."""
        if self.ci_low is None or self.ci_high is None:
            return ""
        return f"95% CI {self.ci_low:.4g}–{self.ci_high:.4g}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and the experiment store."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerplexityResult:
        """Inverse of `to_dict`."""
        return cls(**data)


def _as_sequences(data: Any, tokenizer: Any | None) -> list[list[int]]:
    """Normalise text, one id stream, several id sequences, a tensor or a TextBlocks-like object to lists of ids."""
    if hasattr(data, "input_ids") and not isinstance(data, (torch.Tensor, dict)):
        data = data.input_ids
    if isinstance(data, str):
        if tokenizer is None:
            raise DataError("perplexity() got text but no tokenizer; pass the model's tokenizer or token ids.")
        return [list(tokenizer(data, add_special_tokens=False)["input_ids"])]
    if isinstance(data, torch.Tensor):
        if data.dim() == 1:
            return [data.tolist()]
        if data.dim() == 2:
            return [row.tolist() for row in data]
        raise DataError(f"perplexity() expects a 1-D or 2-D tensor of token ids, got shape {tuple(data.shape)}.")
    if isinstance(data, Sequence) and len(data) > 0:
        first = data[0]
        if isinstance(first, int):
            return [list(data)]
        if isinstance(first, torch.Tensor):
            return [row.tolist() for row in data]
        if isinstance(first, Sequence) and not isinstance(first, str):
            return [list(row) for row in data]
    raise DataError("perplexity() needs token ids (a list, list of lists or tensor) or text with a tokenizer; "
                    "got an empty or unsupported input.")


def _windows(ids: list[int], seq_len: int, stride: int) -> list[tuple[list[int], int]]:
    """Sliding windows of at most `seq_len` tokens; each item says how many trailing tokens it scores."""
    items: list[tuple[list[int], int]] = []
    previous_end = 0
    begin = 0
    while previous_end < len(ids):
        end = min(begin + seq_len, len(ids))
        window = ids[begin:end]
        # Score tokens not scored before; the first token of the stream has no context and is never scored.
        n_target = min(end - previous_end, len(window) - 1)
        if n_target > 0:
            items.append((window, n_target))
        previous_end = end
        if end == len(ids):
            break
        begin += stride
    return items


def is_causal_lm(model: torch.nn.Module) -> bool:
    """True when the model predicts the next token (not an encoder such as BERT's masked LM)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_decoder", False):
        return True
    from transformers import AutoModelForMaskedLM

    return type(config) not in AutoModelForMaskedLM._model_mapping


def masked_nll_rows(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the sum of next-token NLL over labels != -100 and attention_mask == 1, and the token count."""
    labels = labels.masked_fill(attention_mask == 0, -100)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [batch, pos, vocab]
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                          ignore_index=-100, reduction="none").view(shift_labels.shape)
    return nll.detach().double().sum(dim=1).cpu(), (shift_labels != -100).sum(dim=1).cpu()


BOOTSTRAP_RESAMPLES = 1000


def bootstrap_interval(window_nll: torch.Tensor, window_tokens: torch.Tensor, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float] | None:
    """95% percentile interval of exp(Σnll/Σtokens) over windows resampled with replacement (seeded, so one model
    on one text always gets the same interval); None for fewer than 2 windows."""
    count = int(window_nll.numel())
    if count < 2:
        return None
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, count, (resamples, count), generator=generator)
    means = window_nll[picks].sum(dim=1) / window_tokens[picks].sum(dim=1).double()
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return tuple(math.exp(v) if v < 709.0 else math.inf for v in (low, high))   # as the perplexity itself


def perplexity(
    model: torch.nn.Module,
    tokenizer: Any | None,
    data: Any,
    seq_len: int,
    stride: int | None = None,
    batch_size: int = 4,
) -> PerplexityResult:
    """Perplexity of `model` on text or token ids, with non-overlapping windows (stride=None) or a sliding window.

    With a stride smaller than seq_len, earlier tokens serve as context only and every token is scored exactly once.
    """
    if seq_len < 2:
        raise DataError(f"seq_len must be at least 2 to score any token, got {seq_len}.")
    if not is_causal_lm(model):
        raise UnsupportedModelError(f"{type(model).__name__} is not a causal language model, so next-token "
                                    "perplexity does not apply; evaluate a GPT-2/Llama/OPT/GPT-NeoX model.")
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_positions is not None and seq_len > max_positions:
        raise DataError(f"seq_len {seq_len} exceeds the model's {max_positions} positions; use --seq-len "
                        f"{max_positions} or less.")
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}.")
    stride = seq_len if stride is None else stride
    if not 1 <= stride <= seq_len:
        raise DataError(f"stride must be between 1 and seq_len ({seq_len}), got {stride}.")
    sequences = _as_sequences(data, tokenizer)
    items = [item for ids in sequences for item in _windows(ids, seq_len, stride)]
    if not items:
        raise DataError("Nothing to score: every sequence is shorter than 2 tokens; provide more text.")
    pad_id = 0
    if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is not None:
        pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    window_sums: list[torch.Tensor] = []
    window_counts: list[torch.Tensor] = []
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for offset in range(0, len(items), batch_size):
                chunk = items[offset:offset + batch_size]
                width = max(len(window) for window, _ in chunk)
                input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
                labels = torch.full((len(chunk), width), -100, dtype=torch.long)
                for row, (window, n_target) in enumerate(chunk):
                    length = len(window)
                    input_ids[row, :length] = torch.tensor(window, dtype=torch.long)
                    attention_mask[row, :length] = 1
                    labels[row, length - n_target:length] = input_ids[row, length - n_target:length]
                sums, counts = masked_nll_rows(model, input_ids.to(device), attention_mask.to(device),
                                               labels.to(device))
                window_sums.append(sums)
                window_counts.append(counts)
    finally:
        model.train(was_training)
    window_nll, window_tokens = torch.cat(window_sums), torch.cat(window_counts)
    total_nll, total_tokens = float(window_nll.sum()), int(window_tokens.sum())
    mean_nll = total_nll / total_tokens
    interval = bootstrap_interval(window_nll, window_tokens)
    # exp overflows a float above ~709 nats: such a model is reported as infinitely perplexed, not as an error
    result = PerplexityResult(perplexity=math.exp(mean_nll) if mean_nll < 709.0 else math.inf, nll=mean_nll, tokens_evaluated=total_tokens,
                              window_length=seq_len, stride=stride, seconds=time.perf_counter() - start,
                              ci_low=interval[0] if interval else None, ci_high=interval[1] if interval else None)
    logger.info("Perplexity %.3f over %d tokens (window %d, stride %d)", result.perplexity, total_tokens,
                seq_len, stride)
    return result
