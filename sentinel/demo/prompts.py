"""Prompts that fit each bundled demo model's corpus (no heavy imports: the dashboard pages read these).

The first five of each list are the card's and README's sample prompts; all ten feed the loop-freeness measure.
"""

from __future__ import annotations

PROMPTS: dict[str, tuple[str, ...]] = {
    "stories-gpt2": (  # story openings: the model starts every story after <|endoftext|>, so mid-story prompts
        "Once upon a time, there was a little",                  # often end after a few words
        "There was once a friendly dog called",
        "Once upon a time, in a small house near the forest, there lived a",
        "There was once a shy cat called",
        "Once upon a time, there was a brave",
        "There was once a gentle bear called",
        "Once upon a time, there was a playful",
        "There was once a curious girl called",
        "Once upon a time, in a warm nest near the river, there lived a",
        "There was once a clever boy called",
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


def demo_model_name(source: str | None) -> str:
    """The bundled model a folder is (or was copied from: a saved copy's corpus names its base,
    `sentinel.data.own_text_owner`), by folder name. None is the bundled model Sentinel opens on."""
    from pathlib import Path

    from sentinel.models.bundled import BUNDLED_MODEL_DIR

    if source is None:
        return BUNDLED_MODEL_DIR.name
    from sentinel.data import own_text_owner     # imports torch: only once a model is open

    return own_text_owner(Path(source))


def prompts_for_source(source: str | None) -> tuple[str, ...]:
    """The prompts that fit a model folder: its bundled model's, else the stories prompts."""
    return prompts_for(demo_model_name(source))


def prompts_for(model_name: str) -> tuple[str, ...]:
    """The ten prompts of a bundled model by folder name; other models get the stories prompts (plain English)."""
    return PROMPTS.get(model_name, PROMPTS["stories-gpt2"])


def default_prompts() -> tuple[str, ...]:
    """The prompts of the model Sentinel opens on (sentinel.models.BUNDLED_MODEL_DIR): the dashboard's defaults."""
    from sentinel.models.loading import BUNDLED_MODEL_DIR

    return prompts_for(BUNDLED_MODEL_DIR.name)
