"""Text generation on top of `model.generate`, seeded so that the same settings give the same text."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sentinel.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    """How to decode: greedy, or sampling with temperature / top-k / top-p under a seed."""

    max_new_tokens: int = 50
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and the experiment store."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        """Inverse of `to_dict`."""
        return cls(**data)

    def validate(self) -> None:
        """Raise DataError for settings `generate` would reject or silently misuse."""
        if self.max_new_tokens < 1:
            raise DataError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")
        if not self.greedy:
            if not math.isfinite(self.temperature):
                raise DataError(f"temperature must be a finite number > 0, got {self.temperature}.")
            if self.temperature <= 0:
                raise DataError(f"temperature must be > 0 when sampling (got {self.temperature}); use greedy instead.")
            if self.top_k < 0:
                raise DataError(f"top_k must be >= 0 (0 disables it), got {self.top_k}.")
            if not 0 < self.top_p <= 1:   # also false for nan
                raise DataError(f"top_p must be in (0, 1], got {self.top_p}.")


@dataclass
class GenerationResult:
    """One generation: `text` is the continuation only (without the prompt); `label` names the model compared."""

    text: str
    prompt: str
    new_tokens: int
    seconds: float
    tokens_per_s: float
    label: str = ""
    settings: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and the experiment store."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationResult:
        """Inverse of `to_dict`."""
        return cls(**data)


def _prompt_ids(tokenizer: Any, prompt: str) -> torch.Tensor:
    """Prompt token ids [1, pos]; an empty prompt starts from the bos (or eos) token."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    if not ids:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise DataError("The prompt is empty and the tokenizer has no bos/eos token to start from; give a prompt.")
        ids = [start]
    return torch.tensor([ids], dtype=torch.long)


def generate_text(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 50,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    seed: int = 0,
    label: str = "",
) -> GenerationResult:
    """Continue `prompt` with `model`; sampling is seeded in a scoped way (the global RNG state is restored)."""
    settings = GenerationSettings(max_new_tokens, greedy, temperature, top_k, top_p, seed)
    settings.validate()
    device = next(model.parameters()).device
    input_ids = _prompt_ids(tokenizer, prompt).to(device)
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_positions is not None and input_ids.shape[1] + max_new_tokens > max_positions:
        raise DataError(f"The prompt ({input_ids.shape[1]} tokens) plus {max_new_tokens} new tokens exceeds the "
                        f"model's {max_positions} positions; shorten the prompt or lower max_new_tokens.")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad_id, "do_sample": not greedy}
    if not greedy:
        kwargs.update(temperature=temperature, top_k=top_k, top_p=top_p)
    else:  # neutralise sampling defaults a checkpoint's generation_config may carry
        kwargs.update(temperature=None, top_k=None, top_p=None)
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            start = time.perf_counter()
            output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
    finally:
        model.train(was_training)
    new_ids = output[0, input_ids.shape[1]:]
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    count = int(new_ids.numel())
    return GenerationResult(text=text, prompt=prompt, new_tokens=count, seconds=seconds,
                            tokens_per_s=count / seconds if seconds > 0 else float("inf"), label=label,
                            settings=settings.to_dict())


def compare_generations(
    models: dict[str, torch.nn.Module],
    tokenizer: Any,
    prompt: str,
    settings: GenerationSettings | None = None,
    tokenizers: dict[str, Any] | None = None,
) -> list[GenerationResult]:
    """Generate from each named model with identical settings and seed, so differences come from the models.
    `tokenizers` (per name) overrides `tokenizer` for models that come with their own (e.g. a saved model)."""
    settings = settings or GenerationSettings()
    if not models:
        raise DataError("compare_generations needs at least one model.")
    return [
        generate_text(model, (tokenizers or {}).get(name, tokenizer), prompt, settings.max_new_tokens,
                      settings.greedy, settings.temperature, settings.top_k, settings.top_p, settings.seed,
                      label=name)
        for name, model in models.items()
    ]
