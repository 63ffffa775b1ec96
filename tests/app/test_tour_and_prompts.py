"""The first-run tour (load → prune → compare, hideable) and example prompts that fit the loaded model."""

from __future__ import annotations

from sentinel.demo.prompts import PROMPTS
from sentinel.models import BUNDLED_MODEL_DIR
from tests.app.conftest import assert_clean, open_app


def tour_links(at) -> list[str]:
    return [link.label for link in at.get("page_link")]


def test_a_new_visitor_sees_the_three_step_tour_until_hiding_it():
    at = open_app()
    labels = tour_links(at)
    assert labels[:3] == ["1. Load a model — you are here", "2. Prune it", "3. Compare"]
    at.switch_page("app_pages/prune.py").run()
    assert "2. Prune it — you are here" in tour_links(at)
    at.button(key="tour_hide").click().run()
    assert_clean(at)
    assert not any(label.startswith("1. Load a model") for label in tour_links(at))
    at.switch_page("app_pages/compare.py").run()
    assert not any(label.startswith("3. Compare") for label in tour_links(at))


def test_the_tour_can_be_left_out_by_the_address():
    at = open_app(query={"tour": "off"})
    assert not any(label.startswith("1. Load a model") for label in tour_links(at))


def test_example_prompts_fit_the_loaded_model_and_fill_the_prompt():
    at = open_app("prune")
    assert at.text_input(key="prune_prompt").value == PROMPTS["stories-gpt2"][0]
    at.switch_page("app_pages/model.py").run()
    at.radio(key="model_kind").set_value("folder").run()
    at.text_input(key="model_folder").set_value(str(BUNDLED_MODEL_DIR.parent / "stdlib-gpt2")).run()
    at.button(key="model_load").click().run()
    at.switch_page("app_pages/prune.py").run()
    assert_clean(at)
    assert at.text_input(key="prune_prompt").value == PROMPTS["stdlib-gpt2"][0]    # followed the model
    at.get("button_group")[0].set_value(PROMPTS["stdlib-gpt2"][1]).run()          # the "Example prompts" pills
    assert at.text_input(key="prune_prompt").value == PROMPTS["stdlib-gpt2"][1]
    at.text_input(key="prune_prompt").set_value("def main():").run()              # the user's own: kept
    at.switch_page("app_pages/compare.py").run()
    at.switch_page("app_pages/prune.py").run()
    assert at.text_input(key="prune_prompt").value == "def main():"
