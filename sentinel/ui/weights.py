"""The Weights page: weight-level sparsity (`sentinel.sparsity`) on a copy of the session's model — per-layer
sparsity, sizes (dense, bitmask-compressed), the protocol perplexity and measured speed, said plainly when
zeros do not make this hardware faster."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
from torch import nn

from sentinel.sparsity.masks import SparsifyResult, SparsityConfig, make_permanent, parse_pattern, sparsify
from sentinel.sparsity.report import SpeedComparison, compare_speed
from sentinel.sparsity.scores import DATA_METHODS
from sentinel.sparsity.storage import SizeReport
from sentinel.sparsity.text import calibration_blocks
from sentinel.ui.format import human_bytes

logger = logging.getLogger(__name__)

NO_SPEEDUP = "no speed-up from unstructured sparsity on this hardware"


@dataclass
class SparseModel:
    """The session's model with weight masks installed, and what `sparsify` reported."""

    model: nn.Module
    result: SparsifyResult


def sparsify_copy(model: nn.Module, tokenizer: Any, config: SparsityConfig, calibration_count: int = 16) -> SparseModel:
    """Sparsify a deep copy of `model` (the session's model is untouched); data methods calibrate on the
    bundled train split. The masks are made permanent, so the copy is an ordinary model holding zeros."""
    config.validate()
    calibration = calibration_blocks(tokenizer, blocks=calibration_count) if config.method in DATA_METHODS else None
    work = copy.deepcopy(model)
    result = sparsify(work, config, calibration)
    make_permanent(work)              # plain zeros in plain weights: what is saved, sized and timed
    return SparseModel(work, result)


def layer_sparsity_frame(result: SparsifyResult) -> pd.DataFrame:
    """One row per masked matrix: layer, matrix, sparsity (exact zero share)."""
    return pd.DataFrame([{"layer": m.layer if m.layer is not None else -1, "matrix": m.matrix,
                          "sparsity": m.sparsity} for m in result.stats.matrices])


def size_table(dense: SizeReport, sparse: SizeReport) -> pd.DataFrame:
    """Non-zero parameters and bytes on disk (dense safetensors, bitmask-compressed) before and after."""
    rows = [
        ("Non-zero parameters", f"{dense.nonzero_parameters:,}", f"{sparse.nonzero_parameters:,}"),
        ("Dense file (safetensors)", human_bytes(dense.dense_bytes), human_bytes(sparse.dense_bytes)),
        ("Compressed file (bitmask + values)", human_bytes(dense.compressed_bytes),
         human_bytes(sparse.compressed_bytes)),
    ]
    return pd.DataFrame(rows, columns=["", "Your model", "Sparse"]).set_index("")


def speed_sentence(speed: SpeedComparison, pattern: str | None) -> str:
    """The measured verdict of the sparse row, with the plain statement when unstructured zeros bought nothing."""
    row = speed.rows[-1]
    spread = (f"prefill {row.prefill_ratio:.2f}× ({row.prefill_spread[0]:,.0f}–{row.prefill_spread[1]:,.0f} "
              f"tokens/s), decode {row.decode_ratio:.2f}× over {speed.repeats} interleaved runs")
    if parse_pattern(pattern) is None and "faster" not in row.verdict:
        return (f"Measured: {row.verdict} — {NO_SPEEDUP} ({spread}). Dense kernels still multiply every zero; "
                "what sparsity saves here is the compressed file's size.")
    return f"Measured: {row.verdict} ({spread})."


def measure_sparse_speed(dense: nn.Module, sparse: nn.Module, tokenizer: Any, repeats: int = 3) -> SpeedComparison:
    """Dense and sparse timed in turns (`sentinel.sparsity.report.compare_speed`)."""
    return compare_speed({"dense": dense, "sparse": sparse}, tokenizer, repeats=repeats, prompt_tokens=64,
                         new_tokens=16)
