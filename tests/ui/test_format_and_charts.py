"""Formatting, error wording, text differences, and the heat map's Vega-Lite spec."""

import math

import pytest
import torch

from sentinel.errors import InvalidPruningPlan
from sentinel.charts import METRICS, SELECTION_NAME, head_frame, head_heatmap, level_chart
from sentinel.ui.format import human_count, plain_error, shared_prefix_words, signed_percent, word_diff_html

import pandas as pd


def test_numbers():
    assert human_count(12_345_678) == "12.35 M"
    assert human_count(5_120) == "5.12 k"
    assert human_count(42) == "42"
    assert signed_percent(200, 150) == "-25.0%"
    assert signed_percent(8, 10) == "+25.0%"
    assert signed_percent(0, 3) == ""
    assert signed_percent(1.516, 1.51595) == "-0.0033%" and signed_percent(2.0, 2.0) == "0%"
    assert signed_percent(1.0, math.inf) == ""


def test_word_diff_marks_changed_words_and_escapes_html():
    assert word_diff_html("a b c", "a x c") == "a <mark>x</mark> c"
    assert word_diff_html("a b", "a b") == "a b"
    assert word_diff_html("x", "x <b> y") == "x <mark>&lt;b&gt; y</mark>"
    assert shared_prefix_words("the value of x", "the value is") == 2


def test_plain_error_wording():
    oom = plain_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "computing the maps")
    assert oom.startswith("The device ran out of memory while computing the maps.")
    assert "shorter sample text" in oom
    bad = plain_error(InvalidPruningPlan("The plan breaks min_heads=2."), "pruning")
    assert bad == "Could not finish pruning: The plan breaks min_heads=2."
    with pytest.raises(TypeError):
        plain_error(KeyError("bug"), "anything")


def test_head_frame_marks_pruned_heads_without_scores():
    frame = head_frame([[0.5, 0.25], [1.0, 2.0]], {(0, 1): "masked", (1, 0): "removed"}, [(1, 1)])
    assert frame["label"].tolist() == ["L0 H0", "L0 H1", "L1 H0", "L1 H1"]
    assert frame["status"].tolist() == ["active", "masked", "removed", "active"]
    assert frame["score"].tolist()[0] == 0.5 and math.isnan(frame["score"].tolist()[1])
    assert frame["selected"].tolist() == [False, False, False, True]


def test_heatmap_spec_carries_the_click_selection_and_marks():
    frame = head_frame([[0.5, 0.25], [1.0, 2.0]], {(0, 1): "removed"}, [(1, 1)])
    spec = head_heatmap(frame, METRICS["magnitude"]).to_dict()
    params = [p for layer in spec["layer"] for p in layer.get("params", [])] + spec.get("params", [])
    pick = next(p for p in params if p["name"] == SELECTION_NAME)
    assert pick["select"] == {"type": "point", "fields": ["layer", "head"], "on": "click", "toggle": "event.shiftKey"}
    assert pick["value"] == [{"layer": 1, "head": 1}]
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks == ["rect", "rect", "rect", "text", "text"]   # cells, preview, selection outline, ✕, values
    data = next(iter(spec["datasets"].values()))
    removed = next(row for row in data if row["label"] == "L0 H1")
    assert removed["shown"] == "removed" and removed["shade"] == 0.5   # grey in the chart, no NaN in the scale


def test_level_chart_lines_per_strategy():
    results = pd.DataFrame({"strategy": ["entropy", "entropy", "random"], "level": [0.1, 0.3, 0.1],
                            "perplexity": [20.0, 25.0, 30.0]})
    spec = level_chart(results).to_dict()
    assert spec["encoding"]["color"]["field"] == "strategy"
    assert spec["encoding"]["x"]["field"] == "level"


def test_signed_metrics_get_a_diverging_scale_centred_on_zero_and_legends_say_what_goes_first():
    from sentinel.charts import METRICS, head_frame, head_heatmap, pruned_first

    frame = head_frame([[-0.2, 0.5], [0.1, 0.0]], {}, preview=[(0, 1)])
    assert frame["preview"].tolist() == [False, True, False, False]
    spec = head_heatmap(frame, METRICS["loss_impact"]).to_dict()
    scale = spec["layer"][0]["encoding"]["color"]["condition"]["scale"]
    assert scale["domainMid"] == 0 and scale["domain"] == [-0.5, 0.5] and scale["scheme"] == "blueorange"
    spec = head_heatmap(frame, METRICS["entropy"]).to_dict()
    assert spec["layer"][0]["encoding"]["color"]["condition"]["scale"] == {"scheme": "viridis"}
    assert pruned_first("entropy") == "The entropy strategy prunes the highest values (yellow) first."
    assert pruned_first("entropy_normalized").startswith("No strategy ranks by this metric alone")
    assert pruned_first("magnitude") == "The magnitude strategy prunes the lowest values (dark purple) first."
    assert pruned_first("loss_impact") == "The loss_impact strategy prunes the lowest values (blue) first."


def test_stretched_charts_keep_their_plot_height():
    """Streamlit gives a spec without `autosize` {"type": "fit"}, which squeezes the title, axes and legend into
    `height` (a 6-layer head map kept an 83-pixel plot of 204): charts drawn with width="stretch" fit only
    their width, with a pixel height (a step height makes Vega-Lite drop the fit and warn)."""
    import pandas as pd

    from sentinel.charts import CELL_HEIGHT, attention_heatmap
    from sentinel.ui.unit_maps import percentile_heatmap

    frame = head_frame([[0.5, 0.25], [1.0, 2.0], [0.1, 0.2]], {})
    tokens = ["0: a", "1: b", "2: c"]
    attention = pd.DataFrame([{"query": q, "key": k, "query_token": tokens[q], "key_token": tokens[k], "weight": 0.5}
                              for q in range(3) for k in range(3)])
    grid = pd.DataFrame([{"layer": layer, "percentile": p, "value": 1.0, "active": 4, "removed": 0.0, "going": False}
                         for layer in range(3) for p in (0, 50, 100)])
    for spec, rows in ((head_heatmap(frame, METRICS["magnitude"]).to_dict(), 3),
                       (attention_heatmap(attention, "L0 H0").to_dict(), 3),
                       (percentile_heatmap(grid, "magnitude").to_dict(), 3)):
        assert spec["autosize"] == {"type": "fit-x", "contains": "padding"}
        assert isinstance(spec["height"], int) and spec["height"] >= rows * 18
    assert head_heatmap(frame, METRICS["magnitude"]).to_dict()["height"] == 3 * CELL_HEIGHT
