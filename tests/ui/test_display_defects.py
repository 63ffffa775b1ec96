"""Issue 22's display defects, at the helpers that format them: readable tiny scores, part colours that are not the
selection's red, sensitivity rows by original layer, recovery's perplexities in the before/after table, an export
refused up front in one plain sentence, and model folders named without the server's paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sentinel.charts import METRICS, head_frame, head_heatmap
from sentinel.ui.analysis import ModelFigures, before_after_table
from tests.conftest import make_tiny_lm


def test_tiny_scores_read_as_powers_of_ten_never_as_raw_exponents():
    from sentinel.charts import short_number

    assert short_number(6.01e-7) == "6.0×10⁻⁷" and short_number(-2.5e-5) == "-2.5×10⁻⁵"
    assert short_number(0.0412) == "0.0412" and short_number(1.5) == "1.5" and short_number(0.0) == "0"
    assert short_number(12345.6) == "12,346"
    frame = head_frame([[6.01e-7, 0.25], [-3e-8, 2.0]], {})
    spec = head_heatmap(frame, METRICS["loss_impact"]).to_dict()
    data = next(iter(spec["datasets"].values()))
    assert [row["shown"] for row in data] == ["6.0×10⁻⁷", "0.25", "-3.0×10⁻⁸", "2"]
    text = [layer["encoding"]["text"] for layer in spec["layer"] if "field" in layer["encoding"].get("text", {})]
    assert text == [{"field": "shown", "type": "nominal"}]          # the cell labels are those strings, not d3's


def test_the_layer_bars_are_never_red_or_orange_so_a_selected_mlp_bar_stays_visible():
    import pandas as pd

    from sentinel.ui.unit_maps import GOING_COLOUR, PART_COLOURS, SELECTED_COLOUR, layer_bars

    frame = pd.DataFrame([{"layer": layer, "part": part, "value": 0.5, "shown": "0.5", "going": False,
                           "selected": layer == 1} for layer in range(2) for part in PART_COLOURS])
    spec = layer_bars(frame, "Block influence").to_dict()
    bars = next(layer for layer in spec["spec"]["layer"] if layer["mark"]["type"] == "bar")
    scale = bars["encoding"]["color"]["scale"]
    assert scale["domain"] == ["block", "attention", "mlp"] and len(scale["range"]) == 3

    def hue(colour: str) -> float:
        import colorsys

        r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
        return colorsys.rgb_to_hsv(r, g, b)[0] * 360

    for colour in scale["range"]:                    # red and orange (the selection, the target) are 0–45°
        assert 45 < hue(colour) < 340, colour
    assert SELECTED_COLOUR not in scale["range"] and GOING_COLOUR not in scale["range"]


def test_the_sensitivity_table_names_matrices_by_original_layer_after_a_layer_was_removed(tmp_path):
    from sentinel.models import load_model, save_model
    from sentinel.pruning.apply import apply_plan
    from sentinel.sparsity.sensitivity import layer_sensitivity, sensitivity_lines
    from sentinel.ui.weights_sensitivity import sensitivity_table

    model, tokenizer = make_tiny_lm()
    apply_plan(model, {"layers": {0: ["block"]}}, "remove")        # layer 1 is now transformer.h.0
    copy = load_model(str(save_model(model, tokenizer, tmp_path / "scanned")), device="cpu")  # as the job reads it
    result = layer_sensitivity(copy.model, lambda m: 2.0, levels=(0.5,))
    assert {row.name.split(".")[2] for row in result.rows} == {"0"}    # the module paths say 0 ...
    table = sensitivity_table(result)
    assert table["layer"].tolist() == [1, 1, 1, 1]                 # ... the table says 1, like Maps and Prune
    assert table["matrix"].tolist() == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert "transformer.h" not in table.to_string()
    assert result.rows[0].label == "layer 1 attn.c_attn"
    tooltips = [t if isinstance(t, str) else t["field"] for t in
                sensitivity_lines(result).to_dict()["spec"]["layer"][0]["encoding"]["tooltip"]]
    assert "name" not in tooltips and "layer" in tooltips


def test_the_before_after_table_shows_what_recovery_bought():
    from sentinel.ui.analysis import RecoveryFigures

    before = ModelFigures(48, 48, 1_000_000, 4_000_000, 1.516, 4000)
    after = ModelFigures(40, 48, 800_000, 3_200_000, 1.815, 4000)
    table = before_after_table(before, after, None, [RecoveryFigures(1, "lstsq", 1.516, 2.6, 1.815)])
    assert table.loc["Perplexity right after removal (step 1, before recovery)"].tolist() == \
        ["1.516", "2.6", "+71.5%"]
    assert table.loc["Perplexity after least squares recovery (step 1)"].tolist() == ["2.6", "1.815", "-30.2%"]
    assert table.loc["Perplexity"].tolist() == ["1.516", "1.815", "+19.7%"]
    assert "Perplexity right after removal (step 1, before recovery)" not in before_after_table(before, after).index


def test_an_export_gpt2_cannot_hold_is_refused_up_front_in_one_plain_sentence(tmp_path, monkeypatch):
    from sentinel.export import ExportError, check_exportable
    import torch

    from sentinel.models import LoadedModel, get_layout
    from sentinel.pruning.apply import apply_plan
    from sentinel.ui.export import export_blocker
    from sentinel.ui.session import WorkingModel

    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    model, tokenizer = make_tiny_lm()
    working = WorkingModel(LoadedModel(model, tokenizer, get_layout(model), torch.device("cpu"), "tiny", 0.0))
    assert export_blocker(working) is None
    working.apply({0: [1]}, "mask", "by hand")                    # a masked head is removed before export
    caches: dict = {}
    reason = export_blocker(working, caches)
    assert reason == ("Export is off for this model: a stock gpt2 checkpoint needs all 4 attention heads in every "
                      "layer and 1 layer lost some (prune only MLP neurons or whole layers to export).")
    assert not re.search(r"[A-Z][a-z]+[A-Z]\w*Error|Error\b|n_embd|per_layer_config", reason)   # no class names
    assert reason.count(". ") == 0 and len(reason.split()) < 40
    assert caches == {("export-check", id(working), working.version): reason}
    assert list(tmp_path.iterdir()) == []                          # nothing written
    assert working.model.transformer.h[0].attn.c_attn.weight.shape[1] == 3 * 32   # the session's model untouched
    apply_plan(model, {"neurons": {0: [1, 2], 1: [3]}}, "remove")
    with pytest.raises(ExportError) as err:
        check_exportable(model)
    assert err.value.reason == ("its layers keep different MLP widths and a stock checkpoint needs one width in "
                                "every layer (remove the same number of neurons per layer)")


def test_model_folders_are_named_relative_to_the_data_folder_or_by_their_own_name(tmp_path, monkeypatch):
    from sentinel.files import visitor_name
    from sentinel.models import BUNDLED_MODEL_DIR
    from sentinel.ui.choices import ModelChoice

    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    (tmp_path / "models" / "tiny-pruned").mkdir(parents=True)
    assert visitor_name(tmp_path / "models" / "tiny-pruned") == "models/tiny-pruned"
    assert visitor_name(str(BUNDLED_MODEL_DIR)) == BUNDLED_MODEL_DIR.name
    assert visitor_name("gpt2") == "gpt2" and visitor_name("org/name") == "org/name"
    assert visitor_name(None) == "the bundled demo model"
    assert ModelChoice(str(tmp_path / "models" / "tiny-pruned")).label() == "models/tiny-pruned"
    assert str(tmp_path) not in ModelChoice(str(Path(tmp_path) / "models" / "tiny-pruned")).label()
