"""Weights page: sparsify a copy, see per-layer sparsity and sizes, and the honest speed sentence."""

from __future__ import annotations

from sentinel.sparsity.report import SpeedComparison, SpeedRow
from sentinel.ui.weights import NO_SPEEDUP, speed_sentence
from tests.app.conftest import assert_clean, dashboard, open_app


def test_the_weights_page_sparsifies_a_copy_and_reports_sizes():
    at = open_app("weights")
    at.selectbox(key="weights_method").set_value("l1").run()
    at.button(key="weights_go").click().run()
    assert_clean(at)
    state = dashboard(at)
    assert not state.working.steps                                        # the session's model is untouched
    assert any(m.value.startswith("**50.0%** of the targeted weights are zero") for m in at.markdown)
    table = at.table[0].value
    dense, sparse = (int(v.replace(",", "")) for v in table.loc["Non-zero parameters"])
    assert sparse < dense
    assert any("Perplexity: your model" in m.value for m in at.markdown)
    at.button(key="weights_speed").click().run()
    assert_clean(at)
    assert any(m.value.startswith("Measured: prefill ") for m in at.markdown)
    at.radio(key="weights_pattern").set_value("2:4").run()
    at.button(key="weights_go").click().run()
    assert_clean(at)
    assert any(m.value.startswith("**50.0%** of the targeted weights are zero") for m in at.markdown)


def _speed(ratio: float, verdict: str) -> SpeedComparison:
    rows = [SpeedRow(name, 100.0 * r, 50.0 * r, (90.0, 110.0), (45.0, 55.0), r, r, v, [], [])
            for name, r, v in (("dense", 1.0, "reference"), ("sparse", ratio, verdict))]
    return SpeedComparison(rows, 3, 64, 16, 1)


def test_the_speed_sentence_says_when_unstructured_zeros_bought_nothing():
    plain = speed_sentence(_speed(0.99, "prefill no measurable speed-up, decode no measurable speed-up"), None)
    assert NO_SPEEDUP in plain
    faster = speed_sentence(_speed(1.5, "prefill 1.50x faster, decode 1.50x faster"), None)
    assert NO_SPEEDUP not in faster and faster.startswith("Measured: prefill 1.50x faster")
    assert NO_SPEEDUP not in speed_sentence(_speed(1.0, "prefill no measurable speed-up, decode no measurable "
                                                        "speed-up"), "2:4")
