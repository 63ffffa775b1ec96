"""Shared bits for the fine-tuning tests: tiny token blocks and a small, fast FineTuneConfig."""

from __future__ import annotations

from sentinel.data import cut_blocks, join_documents
from sentinel.training import FineTuneConfig, FineTuneData
from tests.conftest import TINY_TEXTS


def tiny_data(tokenizer, block_size: int = 32) -> FineTuneData:
    """Training blocks from the tiny corpus (repeated), and two validation blocks."""
    blocks = cut_blocks(join_documents(tokenizer, TINY_TEXTS * 3), block_size)
    return FineTuneData(blocks[:-2], blocks[-2:], block_size, "tiny")


def tiny_config(**overrides) -> FineTuneConfig:
    values = dict(max_steps=3, learning_rate=5e-3, batch_size=4, block_size=32, eval_every=0, warmup_ratio=0.0,
                  eval_max_tokens=64, device="cpu", seed=0)
    values.update(overrides)
    return FineTuneConfig(**values)
