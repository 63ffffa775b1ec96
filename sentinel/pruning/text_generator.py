"""Documented API name for text generation: `sentinel.pruning.text_generator.generate_text`."""

from sentinel.generation import GenerationResult, GenerationSettings, compare_generations, generate_text

__all__ = ["GenerationResult", "GenerationSettings", "compare_generations", "generate_text"]
