"""Fine-tuning that recovers pruned models: Trainer-based, with distillation, growth-aware callbacks and jobs."""

from sentinel.training.config import FineTuneConfig, FineTuneResult, TrainingConfigError
from sentinel.training.distill import DistillationTrainer, distillation_loss
from sentinel.training.finetune import FineTuneData, finetune, load_finetune_data

__all__ = [
    "DistillationTrainer", "FineTuneConfig", "FineTuneData", "FineTuneResult", "TrainingConfigError",
    "distillation_loss", "finetune", "load_finetune_data",
]
