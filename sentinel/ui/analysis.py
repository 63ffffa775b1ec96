"""What the pages compute, as plain functions over `sentinel` calls: sample text, head maps, and the
figures of the before/after table. No Streamlit here, so the same steps run from Python and in tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from sentinel.data import TextBlocks
from sentinel.evaluation.size import parameter_count, weight_bytes
from sentinel.metrics import compute_scores
from sentinel.metrics.batches import masked_lm_batches, prepare_batches
from sentinel.metrics.scores import HeadScores
from sentinel.models.heads import model_heads
from sentinel.pruning import active_heads
from sentinel.ui.budget import RECOVERY_LABELS
from sentinel.ui.choices import SampleText
from sentinel.ui.format import human_bytes, signed_percent
from sentinel.ui.history import readable
from sentinel.ui.protocol import EVAL_PROTOCOL, describe_for, protocol_perplexity
from sentinel.evaluation.paired import SpeedComparison
from sentinel.models.positions import cap_to_positions

logger = logging.getLogger(__name__)

UPLOAD_ACCEPT_MB = 50               # what the uploader takes in, so a larger file gets our message, not a red chip
ON_REQUEST = frozenset({"loss_impact"})   # one forward pass per head: only when the user asks


def pasted_text(text: str) -> SampleText:
    return SampleText("pasted", "pasted.txt", text.encode("utf-8"))


def uploaded_text(name: str, data: bytes) -> SampleText:
    return SampleText("uploaded", name, data)


def block_size_for(model: nn.Module, wanted: int) -> int:
    """`wanted`, capped by the model's positions."""
    return cap_to_positions(model, wanted)


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
    """The before/after table's numbers for one model, each measured, never estimated.

    The perplexity follows the app's one protocol (`sentinel.ui.protocol`); timings are in `speed.py`,
    measured in pairs against the base model, never as one number per model.
    """

    active_heads: int
    total_heads: int
    parameters: int
    weight_bytes: int
    perplexity: float
    perplexity_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)
    protocol_note: str | None = None    # the sentence naming the text and windows this perplexity was measured on
    perplexity_interval: str = ""       # '95% CI a–b', bootstrap over the scored windows ('' with one window)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFigures:
        return cls(**data)

    @property
    def perplexity_note(self) -> str:
        """The protocol sentence for this perplexity, shown beside it."""
        return self.protocol_note or EVAL_PROTOCOL.describe(self.perplexity_tokens)


def measure_figures(model: nn.Module, tokenizer: Any) -> ModelFigures:
    """Active heads, parameters, weight bytes and the protocol perplexity of `model`."""
    heads = model_heads(model)
    ppl = protocol_perplexity(model, tokenizer)
    active = sum(len(h) for h in active_heads(model).values())
    return ModelFigures(active, heads.num_layers * heads.num_heads, parameter_count(model), weight_bytes(model),
                        ppl.perplexity, ppl.tokens_evaluated,
                        protocol_note=describe_for(model, ppl.tokens_evaluated), perplexity_interval=ppl.interval())


@dataclass(frozen=True)
class RecoveryFigures:
    """What a removal step with recovery did to perplexity (the app's protocol, measured by its target-prune job):
    before the step, right after the units were cut, and after the re-fit; `step` counts from 1."""

    step: int
    method: str                 # "lstsq" or "bias"
    before: float
    removed: float
    recovered: float

    def rows(self) -> list[tuple[str, str, str, str]]:
        """Two before/after rows: what the removal cost, then what the recovery bought back."""
        how = RECOVERY_LABELS.get(self.method, self.method).lower()
        return [(f"Perplexity right after removal (step {self.step}, before recovery)", readable(self.before),
                 readable(self.removed), signed_percent(self.before, self.removed) or "0%"),
                (f"Perplexity after {how} recovery (step {self.step})", readable(self.removed),
                 readable(self.recovered), signed_percent(self.removed, self.recovered) or "0%")]


WHOLE_MODEL_PREDICTION = "Speed-up predicted (whole model's FLOPs, LM head included)"


def before_after_table(before: ModelFigures, after: ModelFigures, speed: SpeedComparison | None = None,
                       recovered: Iterable[RecoveryFigures] = ()) -> pd.DataFrame:
    """Rows: active heads (count and share), parameters and weight bytes (exact), perplexity (protocol), for each
    `recovered` step its perplexity before recovery and after it, and the predicted and measured speed; columns:
    before, after, change."""
    pruned = before.active_heads - after.active_heads
    rows = [
        ("Active heads", f"{before.active_heads} of {before.total_heads}", f"{after.active_heads} of {after.total_heads}",
         f"{pruned} of {before.total_heads} heads pruned = {share(pruned, before.total_heads)}" if pruned else "none"),
        ("Parameters", f"{before.parameters:,}", f"{after.parameters:,}",
         f"{after.parameters - before.parameters:+,} ({signed_percent(before.parameters, after.parameters) or '0%'})"),
        ("Weight bytes", human_bytes(before.weight_bytes), human_bytes(after.weight_bytes),
         f"{after.weight_bytes - before.weight_bytes:+,} bytes"),
        ("Perplexity", readable(before.perplexity), readable(after.perplexity),
         signed_percent(before.perplexity, after.perplexity) or "0%"),
    ]
    for step in recovered:
        rows += step.rows()
    if speed is not None:
        predicted = (f"{speed.predicted_speedup:.2f}×"
                     if speed.pruned_params < speed.base_params else "none: masked units still compute")
        rows.append((WHOLE_MODEL_PREDICTION, "1.00×", predicted, ""))
        for name, ratio in (("Prefill speed measured", speed.prefill), ("Generation speed measured", speed.decode)):
            rows.append((name, "1.00×", ratio.describe() if ratio else "not measured (nothing removed)", ""))
    return pd.DataFrame(rows, columns=["", "Before", "After", "Change"]).set_index("")


def share(count: int, total: int) -> str:
    """'29%' for 14 of 48 (rounded to a whole percent; the exact count is always shown next to it)."""
    return f"{count / total:.0%}" if total else "0%"


def heads_share(count: int, total: int) -> str:
    """'14 of 48 heads = 29%': a pruning level as the exact count and its share."""
    return f"{count} of {total} heads = {share(count, total)}"
