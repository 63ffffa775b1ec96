"""The evaluation protocol, paired speed measurement, fine-tune verdicts, queue places and run names."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sentinel.data import join_documents, load_texts
from sentinel.evaluation.perplexity import perplexity
from sentinel.jobs import ProgressEvent
from sentinel.pruning import mask_heads, remove_heads
from sentinel.store import JobRecord, MetricPoint, Store
from sentinel.ui.finetune import JobView, best_step, judge_finetune, queue_place
from sentinel.ui.history import finetune_run_name, step_name, target_run_name
from sentinel.ui.protocol import EVAL_PROTOCOL, EvalProtocol, protocol_perplexity
from sentinel.models.flops import forward_flops
from sentinel.evaluation.paired import SpeedRatio, compare_speed, removed_head_count


def test_protocol_scores_the_first_tokens_of_the_validation_text_in_fixed_windows(tiny_lm):
    model, tokenizer = tiny_lm
    protocol = EvalProtocol(tokens=300, window=32)
    result = protocol_perplexity(model, tokenizer, protocol)
    ids = join_documents(tokenizer, load_texts("bundled:validation"))[:300]
    direct = perplexity(model, tokenizer, ids, seq_len=32)
    assert result.perplexity == pytest.approx(direct.perplexity) and result.tokens_evaluated == direct.tokens_evaluated
    assert result.window_length == 32
    assert EVAL_PROTOCOL.describe(4064) == ("perplexity on 4,064 scored tokens of the bundled validation text "
                                            "(windows of 128 tokens; lower is better)")


def test_masking_predicts_no_speedup_and_removal_predicts_one(tiny_lm):
    import copy

    model, tokenizer = tiny_lm
    masked, removed = copy.deepcopy(model), copy.deepcopy(model)
    mask_heads(masked, {0: [0, 1]})
    remove_heads(removed, {0: [0, 1]})
    assert forward_flops(masked, 128, lm_head=True) == forward_flops(model, 128, lm_head=True)
    assert forward_flops(removed, 128, lm_head=True) < forward_flops(model, 128, lm_head=True)
    assert removed_head_count(masked) == 0 and removed_head_count(removed) == 2
    quiet = compare_speed(model, masked, tokenizer, prompt_tokens=8, new_tokens=2)
    assert quiet.prefill is None and quiet.predicted_speedup == 1.0     # masking never claims a speed-up
    timed = compare_speed(model, removed, tokenizer, repeats=3, prompt_tokens=8, new_tokens=2)
    assert timed.prefill.pairs == 3 and timed.prefill.low <= timed.prefill.median <= timed.prefill.high
    assert timed.predicted_speedup > 1.0 and timed.pruned_params < timed.base_params


def test_a_spread_over_one_is_no_measurable_difference():
    assert not SpeedRatio(1.02, 0.95, 1.10, 5).measurable
    assert SpeedRatio(1.02, 0.95, 1.10, 5).describe() == "no measurable difference (0.95–1.10×, 5 interleaved pairs)"
    assert SpeedRatio(0.8, 0.75, 0.9, 5).describe() == "0.80× slower (0.75–0.90×, 5 interleaved pairs)"


def job(state="succeeded", steps=6, out="/nowhere", created=1.0, device="cpu", progress=None, id_="j1"):
    return JobRecord(id_, "e1", "dashboard-finetune", {"out": out, "config": {"max_steps": steps}}, device, state,
                     progress or {"step": steps}, {"steps": steps}, None, 1, None, None, None, created, None, None)


def view_of(record, curve):
    frame = pd.DataFrame({"step": [s for s, _ in curve], "val_perplexity": [v for _, v in curve]})
    return JobView(record, ProgressEvent.from_dict(record.progress), frame)


def test_a_worse_finetune_is_judged_worse_and_the_best_checkpoint_is_offered(tmp_path):
    (tmp_path / "checkpoints" / "step-2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-2" / "config.json").write_text("{}")
    view = view_of(job(out=str(tmp_path)), [(2, 110.0), (4, 400.0), (6, 1811.0)])
    verdict = judge_finetune(view, before=120.89, after=1811.01, tokens=4064)
    assert not verdict.improved and not verdict.last_is_best
    assert (verdict.best_step, verdict.best_value) == (2, 110.0)
    assert verdict.best_path == str(tmp_path / "checkpoints" / "step-2")
    assert verdict.outcome == "worse"
    assert verdict.headline().startswith("Fine-tuning for 6 steps: perplexity got worse, 120.9 → 1,811 (+1398.1%) (")
    diverged = judge_finetune(view_of(job(), [(3, 500.0), (6, 900.0)]), 120.0, 900.0, 4064)
    assert diverged.best_step == 0 and diverged.best_path is None       # the start model was best
    better = judge_finetune(view_of(job(), [(3, 100.0), (6, 90.0)]), 120.0, 90.0, 4064)
    assert better.improved and better.last_is_best and better.outcome == "improved"


def test_a_finetune_that_moved_perplexity_less_than_the_tolerance_changed_nothing():
    from sentinel.ui.finetune import FINETUNE_TOLERANCE

    view = view_of(job(steps=2), [(2, 1.52)])
    same = judge_finetune(view, before=1.5213, after=1.5213, tokens=4064)       # a tie is not "got worse"
    assert same.outcome == "unchanged" and not same.improved
    assert same.headline().startswith("Fine-tuning for 2 steps: no measurable change in perplexity, 1.521 → 1.521 "
                                      "(+0.0%, under the 0.5% tolerance) (")
    tiny = judge_finetune(view, before=1.5213, after=1.5213 * (1 + FINETUNE_TOLERANCE / 2), tokens=4064)
    assert tiny.outcome == "unchanged"
    worse = judge_finetune(view, before=1.5213, after=1.5213 * (1 + 2 * FINETUNE_TOLERANCE), tokens=4064)
    assert worse.outcome == "worse" and "1.521 → 1.537 (+1.0%)" in worse.headline()
    better = judge_finetune(view, before=1.5213, after=1.5213 * (1 - 2 * FINETUNE_TOLERANCE), tokens=4064)
    assert better.improved and "1.521 → 1.506 (-1.0%)" in better.headline()


def test_best_step_prefers_the_later_of_equal_points():
    points = [MetricPoint(2, 50.0, 0.0), MetricPoint(4, 50.0, 0.0), MetricPoint(6, math.nan, 0.0)]
    assert best_step(points, 60.0) == (4, 50.0)
    assert best_step([], 60.0) == (0, 60.0)


def test_queue_place_counts_the_jobs_ahead(tmp_path):
    store = Store(tmp_path / "store.db")
    running = store.create_job("dashboard-finetune", {}, "cpu")
    store.set_job_state(running, "running")
    store.update_job_progress(running, {"step": 3, "total_steps": 10, "eta_seconds": 40.0})
    first = store.create_job("dashboard-finetune", {}, "cpu")
    second = store.create_job("dashboard-finetune", {}, "cpu")
    place = queue_place(store, store.get_job(first))
    assert (place.place, place.start_in_s) == (1, 40.0)
    assert place.describe() == "#1 in the queue; estimated start in about 40 s"
    later = queue_place(store, store.get_job(second))
    assert later.place == 2 and later.start_in_s is None and "no start estimate" in later.describe()


def test_runs_are_named_by_what_they_did():
    steps = [{"mode": "mask", "how": "entropy 30%", "strategy": "entropy", "ratio": 0.3,
              "heads": {"0": [1, 2], "3": [4]}}]
    assert finetune_run_name(steps, 40) == "entropy 30% mask (3 heads) + 40 steps"
    picked = [{"mode": "remove", "how": "selection of 1 heads", "strategy": None, "heads": {"1": [0]}}]
    assert finetune_run_name(picked, 10, distill=True) == "selection remove (1 head) + 10 steps distilled"
    assert finetune_run_name([], 5) == "unpruned + 5 steps"


def test_neuron_and_layer_steps_are_named_by_their_units():
    from sentinel.ui.budget import BudgetSettings
    from sentinel.ui.session import PruneStep

    target = BudgetSettings(units=("heads", "neurons"), measure="params", share=0.5, recovery="lstsq")
    neurons = {0: list(range(1500)), 2: list(range(1639))}
    step = PruneStep("remove", {0: [1, 2], 1: [3]}, target.label(), neurons=neurons, recovery="lstsq")
    assert step_name(step.to_dict()) == "target params 50% (3 heads, 3,139 neurons), lstsq"
    layers = PruneStep("remove", {}, "selection of 2 layers", layers={3: ["block"], 5: ["mlp"]})
    assert step_name(layers.to_dict()) == "selection remove (layers 3, 5:mlp)"
    speed = BudgetSettings(units=("neurons",), measure="speedup", share=1.5)
    only_neurons = PruneStep("remove", {}, speed.label(), neurons={1: [7]})
    assert finetune_run_name([step.to_dict(), only_neurons.to_dict()], 40) == (
        "target params 50% (3 heads, 3,139 neurons), lstsq then target speed-up 1.5× (1 neuron) + 40 steps")


def test_target_runs_name_a_speedup_as_a_factor():
    from sentinel.ui.budget import BudgetSettings

    assert target_run_name(BudgetSettings(measure="speedup", share=1.5)) == "speed-up 1.5× heads+neurons, no recovery"
    assert target_run_name(BudgetSettings(units=("heads",), measure="params", share=0.5, recovery="lstsq")) == (
        "params 50% heads, lstsq")


def test_settings_and_results_read_like_tables_and_two_runs_diff():
    from sentinel.store import ExperimentRecord
    from sentinel.ui.history import config_diff, overlay_frame, readable, readable_table

    assert readable(120.88851649468266) == "120.9" and readable(1e-4) == "1.00e-04" and readable(4096) == "4,096"
    assert readable(True) == "yes" and readable(list(range(10))) == "10 items"
    steps = [{"mode": "mask", "how": "entropy 30%", "strategy": "entropy", "ratio": 0.3, "heads": {"0": [1]}}]
    table = readable_table({"learning_rate": 0.01, "dashboard_steps": steps})
    assert table.to_dict("records") == [{"setting": "learning rate", "value": "0.01"},
                                        {"setting": "dashboard steps", "value": "entropy 30% mask (1 head)"}]
    a = ExperimentRecord("a", "run A", "finetune", "m", "completed", {"learning_rate": 1e-4, "steps": 40}, {}, 1, 1)
    b = ExperimentRecord("b", "run B", "finetune", "m", "completed", {"learning_rate": 1e-2, "steps": 40}, {}, 1, 1)
    assert config_diff(a, b).to_dict("records") == [{"setting": "learning rate", "A: run A (a)": "1.00e-04",
                                                     "B: run B (b)": "0.01"}]
    same = ExperimentRecord("c", "run A", "finetune", "m", "completed", {"learning_rate": 1e-2, "steps": 40}, {}, 1, 1)
    diff = config_diff(a, same)          # runs named by what they did often share a name: both columns stay
    assert list(diff.columns) == ["setting", "A: run A (a)", "B: run A (c)"]
    assert diff.to_dict("records") == [{"setting": "learning rate", "A: run A (a)": "1.00e-04",
                                        "B: run A (c)": "0.01"}]
    overlay = overlay_frame({"run A": {"loss": [MetricPoint(1, 3.0, 0.0), MetricPoint(2, math.nan, 0.0)]},
                             "run B": {"loss": [MetricPoint(1, 2.5, 0.0)]}}, "loss")
    assert overlay.to_dict("records") == [{"run": "run A", "step": 1, "value": 3.0},
                                          {"run": "run B", "step": 1, "value": 2.5}]


def test_a_session_snapshot_round_trips_through_the_address():
    from sentinel.errors import DataError
    from sentinel.ui.state import ModelChoice, SessionSnapshot, restorable_source

    steps = ({"mode": "mask", "heads": {"0": [1, 2]}, "how": "entropy 30%", "strategy": "entropy", "ratio": 0.3},)
    snapshot = SessionSnapshot(ModelChoice(None, "cpu", "float32"), steps, ((1, 2),), "job1/step-4", "job1", "cmp1")
    token = snapshot.encode()
    assert token.isascii() and "=" not in token
    assert SessionSnapshot.decode(token) == snapshot
    with pytest.raises(DataError, match="cannot be read"):
        SessionSnapshot.decode(token[:-7])
    from pathlib import Path
    assert restorable_source(None, Path("/data")) and restorable_source("/data/models/x", Path("/data"))
    assert not restorable_source("/etc", Path("/data"))
