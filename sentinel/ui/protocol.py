"""The dashboard's one evaluation protocol: every perplexity on every page is measured by `protocol_perplexity`.

Same text (the bundled corpus's validation split, which any tokenizer can read), same token count and
same window, so a model has one perplexity whichever page shows it. The dashboard's fine-tune jobs score
their validation split on the same first tokens (`EVAL_PROTOCOL.tokens`), in blocks of their own length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from sentinel.data import EvalText, evaluation_text, join_documents, load_texts
from sentinel.errors import DataError
from sentinel.evaluation.own_text import own_text_window, text_perplexity
from sentinel.evaluation.perplexity import PerplexityResult, perplexity
from sentinel.models.heads import model_heads
from sentinel.models.int8 import is_int8
from sentinel.models.positions import cap_to_positions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalProtocol:
    """Which text, how many of its first tokens and which window every dashboard perplexity uses."""

    source: str = "bundled:validation"
    text_name: str = "the bundled validation text"
    tokens: int = 4096
    window: int = 128

    def window_for(self, model: nn.Module) -> int:
        """The window, capped by the model's positions."""
        return cap_to_positions(model, self.window)

    def describe(self, scored: int | None = None) -> str:
        """The sentence shown beside each perplexity, e.g. 'perplexity on 4,064 scored tokens of …'."""
        count = f"{scored:,} scored tokens" if scored is not None else f"the first {self.tokens:,} tokens"
        return f"perplexity on {count} of {self.text_name} (windows of {self.window} tokens; lower is better)"


EVAL_PROTOCOL = EvalProtocol()


def protocol_perplexity(model: nn.Module, tokenizer: Any, protocol: EvalProtocol = EVAL_PROTOCOL) -> PerplexityResult:
    """Perplexity of `model` under `protocol`: the first `tokens` tokens of its text, non-overlapping windows."""
    # an int8 model's Linear modules are no adapter's layout; only causal LMs (can_generate) are quantized
    causal = model.can_generate() if is_int8(model) else model_heads(model).adapter.is_causal(model.config)
    if not causal:
        raise DataError("Perplexity needs a causal language model; this is a masked-LM model, so the dashboard "
                        "shows no perplexity for it. Use a GPT-2, Llama, OPT or GPT-NeoX model.")
    if protocol is EVAL_PROTOCOL:
        text = model_eval_text(model)
        if text.own:   # the folder's own held-out split: the same numbers as `sentinel evaluate` and the card
            return text_perplexity(model, tokenizer, text)
    ids = join_documents(tokenizer, load_texts(protocol.source))[:protocol.tokens]
    result = perplexity(model, tokenizer, ids, seq_len=protocol.window_for(model), batch_size=8)
    logger.info("Protocol perplexity %.3f over %d tokens", result.perplexity, result.tokens_evaluated)
    return result


def model_eval_text(model: nn.Module) -> EvalText:
    """The text the dashboard scores `model` on: its folder's own validation split when it carries one."""
    return evaluation_text(getattr(model.config, "name_or_path", None) or None)


def describe_for(model: nn.Module, scored: int | None = None) -> str:
    """The protocol sentence for `model`'s perplexity, naming the text it was measured on."""
    text = model_eval_text(model)
    if not text.own:
        return EVAL_PROTOCOL.describe(scored)
    count = f"{scored:,} scored tokens" if scored is not None else "every token"
    window = own_text_window(model)
    return f"perplexity on {count} of {text.name} (windows of {window} tokens; lower is better)"
