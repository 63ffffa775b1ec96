"""What the pages compute, as plain functions over `sentinel` calls: sample text, head maps, and the
figures of the before/after table. No Streamlit here, so the same steps run from Python and in tests.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd
from torch import nn

from sentinel.data import TextBlocks, load_text_blocks
from sentinel.errors import DataError
from sentinel.evaluation.perplexity import perplexity
from sentinel.evaluation.size import parameter_count, weight_bytes
from sentinel.evaluation.speed import measure_speed
from sentinel.metrics import compute_scores
from sentinel.metrics.batches import masked_lm_batches, prepare_batches
from sentinel.metrics.scores import HeadScores
from sentinel.models.heads import model_heads
from sentinel.pruning import active_heads
from sentinel.ui.format import human_count, signed_percent

logger = logging.getLogger(__name__)

TextKind = Literal["bundled", "pasted", "uploaded"]
UPLOAD_LIMIT_MB = 5                 # also server.maxUploadSize in .streamlit/config.toml
EVAL_TOKENS = 2048                  # perplexity in the before/after table: the first 2,048 tokens of the text
ON_REQUEST = frozenset({"loss_impact"})   # one forward pass per head: only when the user asks


@dataclass(frozen=True)
class SampleText:
    """The text the maps and perplexity run on: the bundled validation split, pasted text or an uploaded file."""

    kind: TextKind = "bundled"
    name: str = "bundled validation text"
    data: bytes | None = None

    @property
    def digest(self) -> str:
        """Identifies the text in cache keys."""
        return hashlib.sha1(self.kind.encode() + self.name.encode() + (self.data or b"")).hexdigest()[:12]

    def blocks(self, tokenizer: Any, block_size: int, max_tokens: int) -> TextBlocks:
        """Token blocks of this text (raises DataError for empty, binary or non-UTF-8 input)."""
        if self.kind == "bundled":
            return load_text_blocks(tokenizer, None, block_size, max_tokens=max_tokens)
        return load_text_blocks(tokenizer, None, block_size, data=self.data, filename=self.name,
                                max_bytes=UPLOAD_LIMIT_MB * 1024 * 1024, max_tokens=max_tokens)


def pasted_text(text: str) -> SampleText:
    return SampleText("pasted", "pasted.txt", text.encode("utf-8"))


def uploaded_text(name: str, data: bytes) -> SampleText:
    return SampleText("uploaded", name, data)


def block_size_for(model: nn.Module, wanted: int) -> int:
    """`wanted`, capped by the model's positions."""
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return min(wanted, int(limit)) if limit else wanted


def score_source(metric: str) -> str:
    """The `compute_scores` name that yields a displayed metric ("entropy" also yields the normalised one)."""
    return "entropy" if metric == "entropy_normalized" else metric


@dataclass
class HeadMaps:
    """Scores computed on one model version and one text; `scores` maps metric names to HeadScores."""

    scores: dict[str, HeadScores]
    model_version: int
    text: str
    tokens: int
    seconds: float

    def missing(self, metrics: Iterable[str]) -> list[str]:
        """The `compute_scores` names still needed to show `metrics`."""
        return list(dict.fromkeys(score_source(m) for m in metrics if m not in self.scores))

    def merge(self, other: HeadMaps) -> None:
        """Add the scores of a later computation on the same model version and text."""
        self.scores.update(other.scores)
        self.seconds += other.seconds

    def frame(self) -> pd.DataFrame:
        """Every metric as a column, one row per original (layer, head), for the CSV download."""
        frames = [s.to_frame().set_index(["layer", "head", "pruned"]) for s in self.scores.values()]
        return pd.concat(frames, axis=1).reset_index()


def compute_maps(
    model: nn.Module,
    tokenizer: Any,
    blocks: TextBlocks,
    metrics: Iterable[str],
    model_version: int,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 4,
) -> HeadMaps:
    """Run the named metrics on the session's model over the text's blocks."""
    start = time.perf_counter()
    batches = prepare_batches(blocks.dataloader(batch_size=batch_size))
    loss_batches = batches
    if not model_heads(model).adapter.is_causal(model.config):
        loss_batches = masked_lm_batches(batches, getattr(tokenizer, "mask_token_id", None))
    scores = compute_scores(model, list(metrics), batches, loss_data=loss_batches, progress=progress)
    return HeadMaps(scores, model_version, blocks.source, blocks.num_tokens, time.perf_counter() - start)


@dataclass
class ModelFigures:
    """The before/after table's numbers for one model, each measured, never estimated."""

    active_heads: int
    total_heads: int
    parameters: int
    weight_bytes: int
    perplexity: float
    perplexity_tokens: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFigures:
        return cls(**data)


def measure_figures(model: nn.Module, tokenizer: Any, text: SampleText, speed_runs: int = 3) -> ModelFigures:
    """Active heads, parameters, perplexity on the first EVAL_TOKENS tokens of `text`, and tokens/s."""
    heads = model_heads(model)
    seq_len = block_size_for(model, 256)
    blocks = text.blocks(tokenizer, seq_len, EVAL_TOKENS)
    if not heads.adapter.is_causal(model.config):
        raise DataError("Perplexity needs a causal language model; this is a masked-LM model, so the "
                        "before/after table has no perplexity for it. Use a GPT-2, Llama, OPT or GPT-NeoX model.")
    ppl = perplexity(model, tokenizer, blocks.stream(), seq_len=seq_len, batch_size=8)
    speed = measure_speed(model, tokenizer, prompt_tokens=min(64, seq_len // 2), new_tokens=16, runs=speed_runs)
    active = sum(len(h) for h in active_heads(model).values())
    return ModelFigures(active, heads.num_layers * heads.num_heads, parameter_count(model), weight_bytes(model),
                        ppl.perplexity, ppl.tokens_evaluated, speed.prefill_tokens_per_s, speed.decode_tokens_per_s)


def before_after_table(before: ModelFigures, after: ModelFigures) -> pd.DataFrame:
    """Rows: active heads, parameters, perplexity, prefill and decode tokens/s; columns: before, after, change."""
    rows = [
        ("Active heads", f"{before.active_heads} / {before.total_heads}", f"{after.active_heads} / {after.total_heads}",
         signed_percent(before.active_heads, after.active_heads)),
        ("Parameters", human_count(before.parameters), human_count(after.parameters),
         signed_percent(before.parameters, after.parameters)),
        (f"Perplexity ({after.perplexity_tokens:,} tokens)", f"{before.perplexity:.2f}", f"{after.perplexity:.2f}",
         signed_percent(before.perplexity, after.perplexity)),
        ("Prefill tokens/s", f"{before.prefill_tokens_per_s:,.0f}", f"{after.prefill_tokens_per_s:,.0f}",
         signed_percent(before.prefill_tokens_per_s, after.prefill_tokens_per_s)),
        ("Generation tokens/s", f"{before.decode_tokens_per_s:,.0f}", f"{after.decode_tokens_per_s:,.0f}",
         signed_percent(before.decode_tokens_per_s, after.decode_tokens_per_s)),
    ]
    return pd.DataFrame(rows, columns=["", "Before", "After", "Change"]).set_index("")
