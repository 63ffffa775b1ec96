"""Maps for neurons and layers: the percentile grid and extremes table, the per-part layer bars."""

from __future__ import annotations

import math

import pyarrow as pa

from sentinel.metrics import compute_scores
from sentinel.models import load_model
from sentinel.ui.unit_maps import layer_frame, neuron_extremes, neuron_percentiles
from tests.app.conftest import assert_clean, dashboard, open_app


def chart_rows(at, index: int = 0):
    data = at.get("vega_lite_chart")[index].proto.datasets[0].data.data
    return pa.ipc.open_stream(data).read_all().to_pandas()


def test_the_maps_page_shows_neurons_and_layers():
    at = open_app("head_maps")
    at.segmented_control(key="maps_kind").set_value("neuron").run()
    assert_clean(at)
    grid = chart_rows(at)
    assert sorted(grid.layer.unique()) == list(range(6)) and set(grid.percentile) == set(range(0, 101, 5))
    table = at.dataframe[0].value
    assert list(table["end"]) == ["lowest"] * 10 + ["highest"] * 10
    assert table["magnitude"].iloc[0] == grid.value.min()          # the lowest neuron is the grid's 0th percentile
    at.segmented_control(key="maps_kind").set_value("layer").run()
    assert_clean(at)
    bars = chart_rows(at)
    assert set(bars.part) == {"block", "attention", "mlp"} and len(bars) == 18
    assert (bars.value > 0).all()                                   # block influence: 1 - cos, live blocks move


def test_pruned_neurons_and_layers_are_left_out_of_the_maps():
    loaded = load_model(None)
    model = loaded.model
    from sentinel.pruning.apply import apply_plan

    apply_plan(model, {"neurons": {1: list(range(1000))}, "layers": {}}, "mask")
    scores = compute_scores(model, ["magnitude"], kind="neuron")["magnitude"]
    grid = neuron_percentiles(scores)
    assert set(grid[grid.layer == 1].active) == {24}
    assert not neuron_extremes(scores, 30).query("layer == 1 and neuron < 1000").shape[0]
    layers = compute_scores(model, ["random"], kind="layer")["random"]
    assert len(layer_frame(layers)) == 18 and not any(math.isnan(v) for v in layer_frame(layers).value)


def charts_with(at, column: str):
    """The drawn charts whose data has `column` (each chart's first dataset)."""
    found = []
    for index in range(len(at.get("vega_lite_chart"))):
        rows = chart_rows(at, index)
        if column in rows.columns:
            found.append(rows)
    return found


def removed_per_layer(histograms) -> dict[int, int]:
    bins = histograms[histograms.row == "bin"]
    return bins[bins.fate == "removed by the target"].groupby("layer")["count"].sum().to_dict()


def target_plan(at, units: list[str], share: float):
    """Prune in target mode with these unit kinds and share: the plan it predicts (and shows on the maps)."""
    at.switch_page("app_pages/prune.py").run()
    at.radio(key="prune_how").set_value("target").run()
    at.multiselect(key="budget_units").set_value(units).run()
    at.slider(key="budget_share").set_value(share).run()
    assert_clean(at)
    return dashboard(at).caches["budget-last"].result.plan


def test_the_maps_outline_the_neurons_the_prune_target_would_remove():
    at = open_app()
    plan = target_plan(at, ["heads", "neurons"], 0.5)
    expected = {layer: len(units) for layer, units in plan.neurons.items() if units}
    assert expected and not plan.layers
    assert removed_per_layer(charts_with(at, "fate")[0]) == expected       # Prune's page shows them too
    at.switch_page("app_pages/head_maps.py").run()
    at.segmented_control(key="maps_kind").set_value("neuron").run()
    assert_clean(at)
    grid = charts_with(at, "going")[0]
    for layer in range(6):           # magnitude is what the target ranks by: the lowest band goes, from 0 up
        marks = grid[grid.layer == layer].sort_values("percentile").going.tolist()
        band = marks.index(False) if False in marks else len(marks)
        assert not any(marks[band:])
        assert abs(band / len(marks) - expected.get(layer, 0) / 1024) <= 1.5 / len(marks)
    histograms = charts_with(at, "fate")[0]
    assert removed_per_layer(histograms) == expected
    cuts = histograms[histograms.row == "cut"]
    assert set(cuts.layer) == set(expected)                     # the cut, where a layer is partly removed
    assert any("the lowest values (dark purple" in c.value for c in at.caption)
    at.segmented_control(key="neuron_map_metric").set_value("activation").run()
    assert_clean(at)
    histograms = charts_with(at, "fate")[0]
    assert removed_per_layer(histograms) == expected and not (histograms.row == "cut").any()
    assert any("not by this metric" in c.value for c in at.caption)

    at.switch_page("app_pages/prune.py").run()            # another mode: the maps forget the target
    at.radio(key="prune_how").set_value("strategy").run()
    at.switch_page("app_pages/head_maps.py").run()
    at.segmented_control(key="maps_kind").set_value("neuron").run()
    assert_clean(at)
    assert not charts_with(at, "going")[0].going.any()
    assert removed_per_layer(charts_with(at, "fate")[0]) == {}


def test_the_maps_outline_the_layers_the_prune_target_would_remove():
    at = open_app()
    plan = target_plan(at, ["layers"], 0.3)
    assert plan.layers and all(parts == ["block"] for parts in plan.layers.values())
    assert {int(r.layer) for r in charts_with(at, "going")[0].itertuples() if r.going} == set(plan.layers)
    at.switch_page("app_pages/head_maps.py").run()
    at.segmented_control(key="maps_kind").set_value("layer").run()
    assert_clean(at)
    bars = charts_with(at, "going")[0]
    assert {(int(r.layer), r.part) for r in bars.itertuples() if r.going} == {
        (layer, part) for layer in plan.layers for part in ("block", "attention", "mlp")}
    assert any("the lowest bars go first" in c.value for c in at.caption)
    assert any(f"layer {min(plan.layers)} (block)" in c.value for c in at.caption)
    at.segmented_control(key="maps_kind").set_value("neuron").run()      # a removed block takes all its neurons
    assert removed_per_layer(charts_with(at, "fate")[0]) == {layer: 1024 for layer in plan.layers}
