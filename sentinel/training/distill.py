"""Knowledge distillation from the unpruned model: the exact loss mix, and the Trainer that uses it.

    loss = alpha * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T)) + (1 - alpha) * CE(z_student, labels)

Both terms are means over the same scored positions: position i's logits predict token i + 1, and a
position counts when that next label is not -100. KL is summed over the vocabulary per position; the
T^2 factor keeps the soft term's gradient scale independent of T (Hinton et al., 2015).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sentinel.training.trainer import SentinelTrainer


@dataclass
class DistillationLoss:
    """The mixed loss and its two parts (each a mean over scored positions)."""

    loss: torch.Tensor
    kl: torch.Tensor
    lm: torch.Tensor


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      alpha: float, temperature: float) -> DistillationLoss:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * LM cross-entropy, for causal LM logits [batch, pos, vocab]."""
    student = student_logits[:, :-1, :].float()        # [batch, pos-1, vocab]: predictions of tokens 1..
    teacher = teacher_logits[:, :-1, :].float()
    targets = labels[:, 1:]                            # [batch, pos-1]
    scored = targets != -100                           # [batch, pos-1]
    count = scored.sum().clamp_min(1)
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kl_per_position = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)   # [batch, pos-1]
    kl = (kl_per_position * scored).sum() / count
    lm = F.cross_entropy(student.reshape(-1, student.size(-1)), targets.reshape(-1), ignore_index=-100,
                         reduction="sum") / count
    return DistillationLoss(alpha * temperature ** 2 * kl + (1 - alpha) * lm, kl, lm)


class DistillationTrainer(SentinelTrainer):
    """SentinelTrainer whose loss is `distillation_loss` against a frozen teacher."""

    # Our loss is a per-batch mean, so the Trainer divides it by the accumulation steps itself.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, teacher: nn.Module, alpha: float, temperature: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval()   # used under no_grad; its parameters stay untouched
        self.alpha = alpha
        self.temperature = temperature
        self.last_parts: DistillationLoss | None = None

    def compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        labels = inputs["labels"]
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**forward)
        with torch.no_grad():
            teacher_logits = self.teacher(**forward).logits
        parts = distillation_loss(outputs.logits, teacher_logits, labels, self.alpha, self.temperature)
        self.last_parts = DistillationLoss(parts.loss.detach(), parts.kl.detach(), parts.lm.detach())
        return (parts.loss, outputs) if return_outputs else parts.loss
