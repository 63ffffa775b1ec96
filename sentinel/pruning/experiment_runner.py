"""Moved to sentinel.workflows.experiment (steps in sentinel.workflows.steps); these names keep working."""

from sentinel.workflows.experiment import (
    DEFAULT_PROMPTS,
    PRUNE_MODES,
    ExperimentConfig,
    ProgressTracker,
    run_experiment,
    run_experiment_job,
    submit_experiment,
)
from sentinel.workflows.steps import analysis_batches, prune_by_strategy, validation_perplexity

__all__ = ["DEFAULT_PROMPTS", "PRUNE_MODES", "ExperimentConfig", "ProgressTracker", "analysis_batches",
           "prune_by_strategy", "run_experiment", "run_experiment_job", "submit_experiment", "validation_perplexity"]
