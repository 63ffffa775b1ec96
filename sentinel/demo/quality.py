"""Text measures that make pruning damage visible in generated text (used by bench/demo_model_quality.py).

- loop-freeness: per continuation, distinct word 4-grams / word 4-grams (words = whitespace-separated), averaged;
  1.0 never repeats a 4-word phrase, a model stuck in "the value of the value of ..." scores far lower.
- corpus-bigram rate: the share of a continuation's lower-cased word bigrams that occur anywhere in the training
  corpus; damaged models write word pairs the corpus never has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sentinel.errors import DataError

_WORD = re.compile(r"[a-z']+")


def four_gram_ratio(text: str) -> float | None:
    """Distinct / total word 4-grams of `text`; None when it has fewer than 4 words (nothing to repeat)."""
    words = text.split()
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return len(set(grams)) / len(grams) if grams else None


def word_bigrams(text: str) -> list[tuple[str, str]]:
    """Consecutive pairs of lower-cased letter words (punctuation dropped)."""
    words = _WORD.findall(text.lower())
    return list(zip(words, words[1:]))


def corpus_bigrams(documents: Iterable[str]) -> set[tuple[str, str]]:
    """Every word bigram of the documents (each document separately)."""
    seen: set[tuple[str, str]] = set()
    for doc in documents:
        seen.update(word_bigrams(doc))
    return seen


@dataclass
class TextQuality:
    """Loop-freeness and corpus-bigram rate of a set of continuations, with the texts themselves."""

    loop_freeness: float
    corpus_bigram_rate: float
    continuations: list[str] = field(default_factory=list)
    scored_for_loops: int = 0     # continuations with at least one 4-gram (the others cannot repeat)
    bigrams: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON report."""
        return asdict(self)


def text_quality(continuations: list[str], known_bigrams: set[tuple[str, str]]) -> TextQuality:
    """Both measures over `continuations` (generated text only, without the prompts)."""
    ratios = [r for r in (four_gram_ratio(t) for t in continuations) if r is not None]
    if not ratios:
        raise DataError("No continuation has four words; generate more tokens to measure loop-freeness.")
    pairs = [pair for text in continuations for pair in word_bigrams(text)]
    if not pairs:
        raise DataError("The continuations contain no word bigrams; generate more tokens.")
    return TextQuality(
        loop_freeness=sum(ratios) / len(ratios),
        corpus_bigram_rate=sum(pair in known_bigrams for pair in pairs) / len(pairs),
        continuations=list(continuations), scored_for_loops=len(ratios), bigrams=len(pairs),
    )
