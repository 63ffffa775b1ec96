"""What the pages say matches what they do: the fine-tune texts, the comparison's baseline, no server folders."""

from __future__ import annotations

from tests.app.conftest import assert_clean, open_app


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def test_the_finetune_page_names_the_texts_the_job_trains_and_validates_on():
    at = open_app()
    at.button(key="model_load").click().run()
    at.switch_page("app_pages/finetune.py").run()
    assert_clean(at)
    said = " ".join(captions(at))
    assert "docstring" not in said and "stdlib" not in said
    assert ("Trains on the bundled stories-gpt2 corpus (its train split) and measures perplexity on "
            "stories-gpt2's own validation split") in said
