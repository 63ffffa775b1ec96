"""Evaluation of (pruned) language models: perplexity, size and speed."""

from sentinel.evaluation.perplexity import PerplexityResult, perplexity
from sentinel.evaluation.speed import SpeedResult, measure_speed, parameter_count, weight_bytes

__all__ = ["PerplexityResult", "SpeedResult", "measure_speed", "parameter_count", "perplexity", "weight_bytes"]
