"""Changed words between two generations, for the dashboard and the review report."""

from __future__ import annotations

import difflib
import html


def word_diff_html(reference: str, other: str) -> str:
    """`other` as HTML with every word that differs from `reference` wrapped in <mark> (text HTML-escaped)."""
    ref_words, words = reference.split(" "), other.split(" ")
    matcher = difflib.SequenceMatcher(a=ref_words, b=words, autojunk=False)
    parts: list[str] = []
    for op, _, _, start, end in matcher.get_opcodes():
        chunk = html.escape(" ".join(words[start:end]))
        if not chunk:
            continue
        parts.append(chunk if op == "equal" else f"<mark>{chunk}</mark>")
    return " ".join(parts)
