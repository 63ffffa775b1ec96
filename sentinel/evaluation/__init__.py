"""Evaluation of (pruned) language models: perplexity and speed."""

from sentinel.evaluation.perplexity import PerplexityResult, perplexity

__all__ = ["PerplexityResult", "perplexity"]
