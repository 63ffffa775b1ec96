"""Prune-page plan choice (strategy / selection, min_heads) and the Experiments page tables."""

import math

import pytest
import torch

from sentinel.errors import InvalidPruningPlan
from sentinel.metrics import weight_magnitude
from sentinel.models import LoadedModel, get_layout
from sentinel.pruning.plan import PruningPlan
from sentinel.store import ExperimentRecord, MetricPoint
from sentinel.ui.analysis import WHOLE_MODEL_PREDICTION, ModelFigures, before_after_table, heads_share
from sentinel.evaluation.paired import SpeedComparison, SpeedRatio
from sentinel.ui.history import curves_frame, experiments_frame, final_perplexity, level_frame
from sentinel.ui.pruning import choose_by_selection, choose_by_strategy
from sentinel.ui.session import WorkingModel
from tests.conftest import make_tiny_model


def working_gpt2() -> WorkingModel:
    model = make_tiny_model("gpt2")
    return WorkingModel(LoadedModel(model, None, get_layout(model), torch.device("cpu"), "tiny", 0.0))


def test_magnitude_strategy_prunes_the_smallest_heads_at_the_ratio():
    working = working_gpt2()
    scores = weight_magnitude(working.model)
    plan, label = choose_by_strategy(working, {"magnitude": scores}, "magnitude", 0.25, min_heads=1)
    # 25% of 12 active heads = 3 heads: the three smallest magnitudes of the whole model.
    flat = sorted((scores.values[layer, head].item(), layer, head) for layer in range(3) for head in range(4))
    expected: dict[int, list[int]] = {}
    for _, layer, head in flat[:3]:
        expected.setdefault(layer, []).append(head)
    assert plan == {layer: sorted(heads) for layer, heads in sorted(expected.items())}
    assert label == "magnitude 25% (whole model, min_heads=1)"


def test_a_ratio_that_selects_nothing_is_refused():
    working = working_gpt2()
    with pytest.raises(InvalidPruningPlan, match="selects no heads"):
        choose_by_strategy(working, {"magnitude": weight_magnitude(working.model)}, "magnitude", 0.01, 1)


def test_a_ratio_that_breaks_min_heads_is_refused():
    working = working_gpt2()
    with pytest.raises(InvalidPruningPlan, match="min_heads=3"):
        choose_by_strategy(working, {"magnitude": weight_magnitude(working.model)}, "magnitude", 0.5, 3)


def test_selection_plans_check_emptiness_and_min_heads():
    working = working_gpt2()
    with pytest.raises(InvalidPruningPlan, match="Nothing is selected"):
        choose_by_selection(working, {}, 1)
    with pytest.raises(InvalidPruningPlan, match="min_heads=2"):
        choose_by_selection(working, {0: [0, 1, 2]}, 2)
    assert choose_by_selection(working, {0: [0, 1], 2: [3]}, 2) == (PruningPlan({0: [0, 1], 2: [3]}),
                                                                     "selection of 3 heads")
    mixed = PruningPlan({0: [1]}, {1: [4, 5]}, {2: ["block"]})
    assert choose_by_selection(working, mixed, 2) == (mixed, "selection of 1 heads, 2 neurons, 1 layers")


def test_before_after_table_values():
    before = ModelFigures(48, 48, 1_000_000, 4_000_000, 1.52134, 4000)
    after = ModelFigures(34, 48, 900_000, 3_600_000, 1.52871, 4000)
    speed = SpeedComparison(SpeedRatio(1.2, 1.1, 1.3, 5), SpeedRatio(1.0, 0.9, 1.1, 5), 1.15, 1_000_000, 900_000,
                            4_000_000, 3_600_000, 14)
    table = before_after_table(before, after, speed)
    assert table.loc["Active heads"].tolist() == ["48 of 48", "34 of 48", "14 of 48 heads pruned = 29%"]
    assert table.loc["Parameters"].tolist() == ["1,000,000", "900,000", "-100,000 (-10.0%)"]
    assert table.loc["Weight bytes"].tolist() == ["3.81 MiB", "3.43 MiB", "-400,000 bytes"]
    assert table.loc["Perplexity"].tolist() == ["1.521", "1.529", "+0.5%"]     # 4 significant digits, not 1.52 twice
    assert table.loc[WHOLE_MODEL_PREDICTION].tolist()[1] == "1.15×"
    assert WHOLE_MODEL_PREDICTION == "Speed-up predicted (whole model's FLOPs, LM head included)"
    assert table.loc["Prefill speed measured"].tolist()[1] == "1.20× faster (1.10–1.30×, 5 interleaved pairs)"
    assert table.loc["Generation speed measured"].tolist()[1] == ("no measurable difference (0.90–1.10×, "
                                                                  "5 interleaved pairs)")
    masked = SpeedComparison(None, None, 1.0, 1_000_000, 1_000_000, 4_000_000, 4_000_000, 0)
    table = before_after_table(before, after, masked)
    assert table.loc[WHOLE_MODEL_PREDICTION].tolist()[1] == "none: masked units still compute"
    assert table.loc["Prefill speed measured"].tolist()[1] == "not measured (nothing removed)"
    assert heads_share(14, 48) == "14 of 48 heads = 29%"


def record(exp_id, config, summary, created=1.0):
    return ExperimentRecord(exp_id, f"run {exp_id}", "benchmark", "m", "done", config, summary, created, created)


def test_experiment_tables():
    records = [
        record("a", {"strategy": "entropy", "pruning_ratio": 0.3, "max_steps": 20}, {"perplexity_after": 21.5}),
        record("b", {"strategy": "entropy", "pruning_ratio": 0.1}, {"perplexity_before": 19.0}),
        record("c", {"strategy": "random"}, {"perplexity_after": 30.0}),
        record("d", {}, {"perplexity_after": math.nan}),
        record("e", {"strategy": "entropy", "pruning_ratio": 0.1, "distill": True},
               {"perplexity_before": 19.0, "perplexity_after": 17.5}),
    ]
    assert final_perplexity(records[0].summary) == 21.5
    assert final_perplexity(records[3].summary) is None
    table = experiments_frame(records)
    assert table["steps"].tolist()[0] == 20 and math.isnan(table["steps"].tolist()[1])
    levels = level_frame(records)
    # run e's 'pruned' point repeats run b's and is shown once; a has only its after-training point.
    assert levels[["strategy", "level", "stage", "perplexity", "run"]].values.tolist() == [
        ["entropy", 0.1, "distilled", 17.5, "e"],
        ["entropy", 0.3, "fine-tuned", 21.5, "a"],
        ["entropy", 0.1, "pruned", 19.0, "b"],
    ]
    curves = curves_frame({"loss": [MetricPoint(1, 3.0, 0.0), MetricPoint(2, 2.5, 0.0)],
                           "val_perplexity": [MetricPoint(2, 12.0, 0.0)]})
    assert curves["step"].tolist() == [1, 2]
    assert curves["loss"].tolist() == [3.0, 2.5]
    assert math.isnan(curves["val_perplexity"].tolist()[0]) and curves["val_perplexity"].tolist()[1] == 12.0
