"""Prompts that fit each bundled demo model's corpus (no heavy imports: the dashboard pages read these).

The first five of each list are the card's and README's sample prompts; all ten feed the loop-freeness measure.
"""

from __future__ import annotations

PROMPTS: dict[str, tuple[str, ...]] = {
    "stories-gpt2": (
        "Once upon a time, there was a little",
        "One day, Lily went to the park",
        "Tom was a brave little boy.",
        "The wind was strong, and the",
        "Suddenly, dark clouds came and",
        "Mia looked everywhere, but",
        "Ben felt sad and did not know what to do.",
        "There was once a friendly dog called",
        "\"Do not worry,\" said",
        "After that,",
    ),
    "stdlib-gpt2": (
        "Return the",
        "This module provides",
        "Create a new",
        "If the file",
        "Raise ValueError if",
        "The default is",
        "This function is",
        "Return True if",
        "Convert a",
        "Parse the",
    ),
}
SAMPLE_COUNT = 5


def prompts_for(model_name: str) -> tuple[str, ...]:
    """The ten prompts of a bundled model by folder name; other models get the stories prompts (plain English)."""
    return PROMPTS.get(model_name, PROMPTS["stories-gpt2"])


def default_prompts() -> tuple[str, ...]:
    """The prompts of the model Sentinel opens on (sentinel.models.BUNDLED_MODEL_DIR): the dashboard's defaults."""
    from sentinel.models.loading import BUNDLED_MODEL_DIR

    return prompts_for(BUNDLED_MODEL_DIR.name)
