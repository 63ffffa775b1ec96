"""The Review page: a verdict on the session's pruned model with the same numbers as `sentinel report`, and the
same HTML to download."""

from __future__ import annotations

from app_support.state import shared_store
from tests.app.conftest import assert_clean, dashboard, open_app


def test_review_page_judges_the_pruned_model_and_offers_the_report():
    from sentinel.data import evaluation_text
    from sentinel.evaluation.own_text import text_perplexity

    at = open_app("review")
    assert_clean(at)
    assert any("no pruning steps yet" in i.value for i in at.info)       # nothing to review before a prune
    at.switch_page("app_pages/prune.py").run()
    at.button(key="prune_go").click().run()
    assert_clean(at)
    at.switch_page("app_pages/review.py").run()
    at.number_input(key="review_ppl").set_value(1.0)
    at.number_input(key="review_rounds").set_value(2)
    at.button(key="FormSubmitter:review_settings-Build the review").click().run()
    assert_clean(at)
    _, review, page, report_id = dashboard(at).caches["review"]
    verdict = review.verdicts[0]
    shown = {"pass": at.success, "fail": at.error, "inconclusive": at.warning}[verdict.status]
    assert shown[0].value == verdict.headline()
    working = dashboard(at).working
    expected = text_perplexity(working.model, working.tokenizer, evaluation_text(working.base.source))
    assert review.models[0].perplexity == expected.perplexity
    rise = review.models[0].perplexity / review.base.perplexity - 1
    assert (verdict.criteria[0].status == "pass") == (rise <= 0.01)   # the reviewer's 1%, not the default 5%
    assert "<script" not in page and "sentinel-review" in page
    assert at.get("download_button")
    # the same page is kept in the data folder's reports store, and its read-only link serves it
    assert shared_store().read_report(report_id) == page
    assert [r.id for r in shared_store().list_reports()][0] == report_id
    link = open_app("experiments", query={"report": report_id})
    assert any(verdict.headline() in h.proto.body for h in link.get("html"))


def test_the_review_shows_the_bundled_task_accuracy_of_both_models():
    """Issue 21 item 3: task accuracy beside perplexity on the Review page, from the bundled task that fits."""
    at = open_app("prune")
    at.button(key="prune_go").click().run()
    at.switch_page("app_pages/review.py").run()
    toggle = at.toggle(key="review_task")
    assert not toggle.disabled and "stories-gpt2-continuation" in toggle.label
    toggle.set_value(True)
    at.number_input(key="review_rounds").set_value(2)
    at.button(key="FormSubmitter:review_settings-Build the review").click().run()
    assert_clean(at)
    _, review, page, _ = dashboard(at).caches["review"]
    for facts in (review.base, review.models[0]):
        accuracy = {t.metric: t for t in facts.tasks}["acc"]
        assert accuracy.task == "stories-gpt2-continuation" and 0 <= accuracy.value <= 1 and accuracy.n == 120
    assert "stories-gpt2-continuation" in page


def test_without_lm_eval_the_review_says_how_to_get_task_accuracy(monkeypatch):
    monkeypatch.setattr("sentinel.evaluation.tasks.lm_eval_installed", lambda: False)
    at = open_app("prune")
    at.button(key="prune_go").click().run()
    at.switch_page("app_pages/review.py").run()
    assert at.toggle(key="review_task").disabled
    assert any("pip install 'sentinel[eval]'" in c.value for c in at.caption)
