"""Fine-tuning settings and results: plain dataclasses that cross JSON, the store and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sentinel.errors import SentinelError

MIXED_PRECISION = ("no", "fp16", "bf16")
SCHEDULERS = ("linear", "cosine", "constant_with_warmup")


class TrainingConfigError(SentinelError, ValueError):
    """A fine-tuning setting is out of range."""


def known_settings(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`data` as keyword arguments for dataclass `cls`; unknown keys raise TrainingConfigError naming them."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TrainingConfigError(f"Unknown {what} settings {unknown}; known: {sorted(known)}.")
    return dict(data)


@dataclass
class FineTuneConfig:
    """How to fine-tune: steps, batch, learning-rate schedule, evaluation, early stopping, distillation."""

    max_steps: int = 200
    learning_rate: float = 1e-4
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    block_size: int = 128
    warmup_ratio: float = 0.1             # linear warm-up over this fraction of max_steps, then `lr_scheduler` decay
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 50                  # validation perplexity every N steps (0: only before and after)
    eval_max_tokens: int = 32768          # validation tokens scored per evaluation
    eval_batch_size: int = 8
    early_stopping_patience: int = 0      # stop after N evaluations without improvement (0: off)
    log_every: int = 1
    checkpoint_every: int = 0             # checkpoint every N steps (0: only on cancel)
    distill: bool = False
    distill_alpha: float = 0.5            # loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * LM loss
    distill_temperature: float = 2.0
    mixed_precision: str = "no"
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        """Raise TrainingConfigError naming the first bad setting."""
        positive = ("max_steps", "batch_size", "gradient_accumulation_steps", "eval_batch_size", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainingConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("eval_every", "early_stopping_patience", "checkpoint_every", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise TrainingConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.block_size < 2:
            raise TrainingConfigError(f"block_size must be at least 2, got {self.block_size}.")
        if self.eval_max_tokens < self.block_size:
            raise TrainingConfigError(f"eval_max_tokens ({self.eval_max_tokens}) must cover one block "
                                      f"({self.block_size} tokens).")
        if not self.learning_rate > 0:
            raise TrainingConfigError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainingConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.lr_scheduler not in SCHEDULERS:
            raise TrainingConfigError(f"lr_scheduler must be one of {', '.join(SCHEDULERS)}, got {self.lr_scheduler!r}.")
        if not 0 <= self.distill_alpha <= 1:
            raise TrainingConfigError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}.")
        if not self.distill_temperature > 0:
            raise TrainingConfigError(f"distill_temperature must be > 0, got {self.distill_temperature}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise TrainingConfigError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                                      f"got {self.mixed_precision!r}.")
        if self.early_stopping_patience and not self.eval_every:
            raise TrainingConfigError("Early stopping needs periodic evaluation; set eval_every > 0.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FineTuneConfig:
        return cls(**known_settings(cls, data, "fine-tuning"))


def nested_finetune(data: Mapping[str, Any], default: FineTuneConfig,
                    legacy: Mapping[str, str]) -> tuple[dict[str, Any], FineTuneConfig]:
    """Split a workflow config's dict into (its own settings, its nested FineTuneConfig).

    The FineTuneConfig is `default`, updated by `data["finetune"]`, then by the flat keys `legacy` maps to
    FineTuneConfig fields (how configs stored before the nesting, and job params overriding the device, say it).
    """
    values = dict(data)
    nested = {**default.to_dict(), **dict(values.pop("finetune", None) or {})}
    for flat, name in legacy.items():
        if flat in values:
            nested[name] = values.pop(flat)
    return values, FineTuneConfig.from_dict(nested)


def with_steps(config: FineTuneConfig, steps: int, **changes: Any) -> FineTuneConfig:
    """`config` for a run of `steps` optimizer steps (workflows set the step count per run)."""
    return replace(config, max_steps=steps, **changes)


@dataclass
class FineTuneResult:
    """What a fine-tune did: steps, why it stopped, loss and validation curves, throughput, last checkpoint."""

    steps: int                            # optimizer steps done in total (including those before a resume)
    max_steps: int
    stopped: str                          # completed, cancelled or early_stopped
    perplexity_before: float | None
    perplexity_after: float | None
    train_tokens_per_second: float
    seconds: float
    losses: list[tuple[int, float]] = field(default_factory=list)        # (step, training loss)
    evaluations: list[tuple[int, float]] = field(default_factory=list)   # (step, validation perplexity)
    checkpoint: str | None = None
    start_step: int = 0
    distill_parts: list[tuple[int, float, float]] = field(default_factory=list)   # (step, KL term, LM loss)

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["losses"] = [list(p) for p in self.losses]
        data["evaluations"] = [list(p) for p in self.evaluations]
        data["distill_parts"] = [list(p) for p in self.distill_parts]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FineTuneResult:
        values = dict(data)
        values["losses"] = [tuple(p) for p in data.get("losses", [])]
        values["evaluations"] = [tuple(p) for p in data.get("evaluations", [])]
        values["distill_parts"] = [tuple(p) for p in data.get("distill_parts", [])]
        return cls(**values)
