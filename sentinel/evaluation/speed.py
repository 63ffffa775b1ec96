"""Inference speed: prefill and decode tokens per second (median of timed runs after warm-up).

Only calls forward/generate, so it measures unpruned, masked and physically pruned models alike.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sentinel.errors import DataError
from sentinel.evaluation.size import parameter_count, weight_bytes

logger = logging.getLogger(__name__)

__all__ = ["SpeedResult", "measure_speed", "parameter_count", "weight_bytes"]


@dataclass
class SpeedResult:
    """Median throughput over `runs` timed runs, with the model's size next to it."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    params: int
    weight_bytes: int
    prompt_tokens: int
    new_tokens: int
    batch_size: int
    runs: int
    device: str
    prefill_seconds: float
    decode_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and the experiment store."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeedResult:
        """Inverse of `to_dict`."""
        return cls(**data)


def _synchronise(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn: Any, device: torch.device) -> float:
    """Seconds `fn()` takes, synchronised on accelerators."""
    _synchronise(device)
    start = time.perf_counter()
    fn()
    _synchronise(device)
    return time.perf_counter() - start


def measure_speed(
    model: torch.nn.Module,
    tokenizer: Any | None = None,
    prompt_tokens: int = 128,
    new_tokens: int = 32,
    runs: int = 5,
    warmup: int = 1,
    batch_size: int = 1,
    seed: int = 0,
) -> SpeedResult:
    """Time prefill (one forward pass over the prompt) and decode (greedy generation of `new_tokens`).

    Decode throughput is new tokens / (generate time − prefill time), so it counts only the incremental steps.
    """
    if runs < 1 or warmup < 0 or prompt_tokens < 1 or new_tokens < 1 or batch_size < 1:
        raise DataError("measure_speed needs runs >= 1, warmup >= 0 and positive prompt/new token counts.")
    config = getattr(model, "config", None)
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and prompt_tokens + new_tokens > max_positions:
        raise DataError(f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the model's "
                        f"{max_positions} positions; use a shorter prompt or fewer new tokens.")
    device = next(model.parameters()).device
    vocab = getattr(config, "vocab_size", None) or len(tokenizer)
    generator = torch.Generator().manual_seed(seed)
    # Random prompt ids: timing does not depend on the text, and min_new_tokens fixes the generated length.
    input_ids = torch.randint(0, vocab, (batch_size, prompt_tokens), generator=generator).to(device)
    attention_mask = torch.ones_like(input_ids)
    eos = getattr(config, "eos_token_id", None)
    pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    pad_id = pad_id if pad_id is not None else (eos if isinstance(eos, int) else 0)

    def prefill() -> None:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)

    def generate() -> None:
        # min_new_tokens keeps every run at exactly new_tokens even if eos is produced.
        model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id)

    was_training = model.training
    model.eval()
    prefill_times: list[float] = []
    decode_times: list[float] = []
    try:
        with torch.no_grad():
            for _ in range(warmup):
                prefill()
                generate()
            for _ in range(runs):
                p = _timed(prefill, device)
                g = _timed(generate, device)
                prefill_times.append(p)
                decode_times.append(max(g - p, 1e-9))
    finally:
        model.train(was_training)
    prefill_s = statistics.median(prefill_times)
    decode_s = statistics.median(decode_times)
    result = SpeedResult(
        prefill_tokens_per_s=batch_size * prompt_tokens / prefill_s,
        decode_tokens_per_s=batch_size * new_tokens / decode_s,
        params=parameter_count(model), weight_bytes=weight_bytes(model), prompt_tokens=prompt_tokens,
        new_tokens=new_tokens, batch_size=batch_size, runs=runs, device=str(device),
        prefill_seconds=prefill_s, decode_seconds=decode_s,
    )
    logger.info("Speed: prefill %.0f tok/s, decode %.1f tok/s (%d runs)", result.prefill_tokens_per_s,
                result.decode_tokens_per_s, runs)
    return result
