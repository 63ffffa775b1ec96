"""Experiments as a run tracker (plain pandas, no Streamlit): filters, the share of parameters a run removed, the
base reference, intervals read from new and old summaries, and the CSV/JSON of a table."""

from __future__ import annotations

import json

import pandas as pd

from sentinel.store import ExperimentRecord
from sentinel.ui.history import (baselines, experiments_frame, filter_records, level_frame, parameter_share,
                                 parse_tags, table_files)
from sentinel.workflows.summary import RunSummary, ci_entry
from sentinel.evaluation.perplexity import PerplexityResult


def run(exp_id: str, config: dict, summary: dict, kind: str = "finetune", tags: list[str] | None = None,
        created: float = 1.0, model: str = "m") -> ExperimentRecord:
    return ExperimentRecord(exp_id, f"run {exp_id}", kind, model, "completed", config, summary, created, created,
                            tags or [])


MIXED = {"strategy": "mixed", "pruning_ratio": 0.58, "params_before": 1000, "params_after": 560,
         "baseline_perplexity": 1.5, "dashboard_steps": [{"mode": "remove", "heads": {}, "how": "x"}]}
PROTOCOL = {"protocol_perplexity_before": 2.6, "protocol_perplexity_before_ci": [2.5, 2.7],
            "protocol_perplexity_after": 1.8, "protocol_perplexity_after_ci": [1.75, 1.85], "protocol_tokens": 100}


def test_a_mixed_run_sits_at_the_share_of_parameters_it_removed():
    mixed = run("mix", MIXED, PROTOCOL)
    old = run("old", {"strategy": "entropy", "pruning_ratio": 0.3, "dashboard_steps": []},
              {"protocol_perplexity_before": 2.0, "protocol_perplexity_after": 1.9, "protocol_tokens": 100})
    assert parameter_share(mixed) == 0.44 and parameter_share(old) is None
    heads = level_frame([mixed, old], "heads")
    assert sorted(heads[heads["run"] == "mix"]["level"]) == [0.58, 0.58]
    params = level_frame([mixed, old], "params")
    assert set(params["run"]) == {"mix"} and set(params["level"]) == {0.44}      # an old run has no such level
    rows = params.set_index("stage")
    assert (rows.loc["pruned", "ci_low"], rows.loc["pruned", "ci_high"]) == (2.5, 2.7)
    assert (rows.loc["fine-tuned", "ci_low"], rows.loc["fine-tuned", "ci_high"]) == (1.75, 1.85)
    assert heads[heads["run"] == "old"][["ci_low", "ci_high"]].isna().all().all()   # old runs: no interval
    table = experiments_frame([mixed, old]).set_index("id")
    assert table.loc["mix", "params_removed"] == 0.44 and pd.isna(table.loc["old", "params_removed"])
    assert (table.loc["mix", "ci_low"], table.loc["mix", "ci_high"]) == (1.75, 1.85)
    # a compress run's summary holds the counts itself
    assert parameter_share(run("c", {}, {"params_before": 200, "params_after": 150}, kind="compress")) == 0.25


def test_the_interval_belongs_to_the_number_it_was_read_from():
    summary = RunSummary.from_dict({"perplexity_after": 3.0, "perplexity_after_ci": [2.9, 3.1],
                                    "protocol_perplexity_after": 2.0})
    assert summary.perplexity_after == 2.0 and summary.final_interval is None   # 2.0 has no interval recorded
    summary = RunSummary.from_dict({"perplexity_after": 3.0, "perplexity_after_ci": [2.9, 3.1]})
    assert summary.final_interval == (2.9, 3.1)
    assert RunSummary.from_dict(summary.to_dict()) == summary                    # written and read back alike
    for broken in ([3.1, 2.9], [1.0], "2.9-3.1", [None, 3.0], [float("nan"), 3.0]):
        assert RunSummary.from_dict({"perplexity_after": 3.0, "perplexity_after_ci": broken}).final_interval is None
    result = PerplexityResult(3.0, 1.1, 100, 64, 64, ci_low=2.9, ci_high=3.1)
    assert ci_entry("protocol_perplexity_after", result) == {"protocol_perplexity_after_ci": [2.9, 3.1]}
    assert ci_entry("x", PerplexityResult(3.0, 1.1, 10, 64, 64)) == {}


def test_the_base_reference_comes_from_a_run_that_measured_the_unpruned_model():
    pruned_first = run("t", {"dashboard_steps": [{"mode": "mask"}]}, {"baseline_perplexity": 9.0}, created=5.0)
    fresh = run("f", {"dashboard_steps": []}, {"baseline_perplexity": 1.52}, kind="dashboard-compress", created=3.0)
    tuned = run("mix", MIXED, PROTOCOL, created=2.0)
    other = run("o", {}, {"baseline_perplexity": 40.0}, kind="compress", model="other")
    found = baselines([pruned_first, fresh, tuned, other])
    assert (found["m"].perplexity, found["m"].run) == (1.52, "f")      # not 9.0: that run started already pruned
    assert found["other"].perplexity == 40.0
    assert baselines([tuned])["m"].perplexity == 1.5                    # a fine-tune's recorded base


def test_filters_by_text_kind_and_tag():
    runs = [run("a1", {}, {}, tags=["demo"]), run("b2", {}, {}, kind="compress", tags=["demo", "keep"]),
            run("c3", {}, {}, kind="compress")]
    assert [r.id for r in filter_records(runs, text="RUN B")] == ["b2"]
    assert [r.id for r in filter_records(runs, text="c3")] == ["c3"]
    assert [r.id for r in filter_records(runs, kinds=["compress"])] == ["b2", "c3"]
    assert [r.id for r in filter_records(runs, tags=["keep", "demo"])] == ["a1", "b2"]
    assert [r.id for r in filter_records(runs, kinds=["finetune"], tags=["keep"])] == []
    assert filter_records(runs) == runs
    assert parse_tags(" demo, , baseline run ,") == ["demo", "baseline run"]


def test_a_table_downloads_as_the_same_rows_in_csv_and_json():
    frame = pd.DataFrame({"run": ["a", "b"], "perplexity": [1.5, None], "tags": ["x, y", ""]})
    csv, data = table_files(frame)
    assert csv.decode().splitlines() == ["run,perplexity,tags", "a,1.5,\"x, y\"", "b,,"]
    assert json.loads(data) == [{"run": "a", "perplexity": 1.5, "tags": "x, y"},
                                {"run": "b", "perplexity": None, "tags": ""}]
