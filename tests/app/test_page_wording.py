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
    assert ("Trains on stories-gpt2's own train split and measures perplexity on "
            "stories-gpt2's own validation split") in said


def test_a_stdlib_session_fine_tunes_on_its_own_train_split_or_the_text_the_user_chose():
    from pathlib import Path

    from sentinel.models import BUNDLED_MODEL_DIR
    from tests.app.conftest import dashboard, errors, url_of

    at = open_app("model")
    at.radio(key="model_kind").set_value("folder").run()
    at.text_input(key="model_folder").set_value(str(BUNDLED_MODEL_DIR.parent / "stdlib-gpt2")).run()
    at.button(key="model_load").click().run()
    at.switch_page("app_pages/finetune.py").run()
    assert_clean(at)
    assert at.radio(key="finetune_text").value == "own"
    said = " ".join(captions(at))
    assert ("Trains on stdlib-gpt2's own train split and measures perplexity on stdlib-gpt2's own validation "
            "split") in said
    at.radio(key="finetune_text").set_value("bundled").run()
    assert "Trains on the bundled stories-gpt2 corpus (its train split)" in " ".join(captions(at))
    at.radio(key="finetune_text").set_value("uploaded").run()
    at.button(key="FormSubmitter:finetune_settings-Start fine-tuning").click().run()
    assert_clean(at)
    assert any("Choose a training text file to upload" in e for e in errors(at))
    assert dashboard(at).job_id is None                         # nothing started, nothing written
    at.radio(key="finetune_text").set_value("own").run()
    at.number_input(key="finetune_steps").set_value(1)
    at.button(key="FormSubmitter:finetune_settings-Start fine-tuning").click().run()
    assert_clean(at)
    job = dashboard(at).job_id
    assert job is not None and url_of(at)["job"] == job
    from app_support.state import shared_store

    params = shared_store().get_job(job).params
    assert Path(params["text"]).parts[-2:] == ("corpus", "train.jsonl.gz")
    assert Path(params["validation_text"]).parts[-2:] == ("corpus", "validation.jsonl")
    from app_support.state import shared_jobs

    shared_jobs().cancel(job)
