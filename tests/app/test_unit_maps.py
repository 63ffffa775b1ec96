"""Maps for neurons and layers: the percentile grid and extremes table, the per-part layer bars."""

from __future__ import annotations

import math

import pyarrow as pa

from sentinel.metrics import compute_scores
from sentinel.models import load_model
from sentinel.ui.unit_maps import layer_frame, neuron_extremes, neuron_percentiles
from tests.app.conftest import assert_clean, open_app


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
