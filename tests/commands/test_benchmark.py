"""`sentinel benchmark`: a tiny real grid with its files and records, the winners, and bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sentinel.cli import main
from sentinel.commands.benchmark import verdict
from sentinel.pruning.benchmark import BenchmarkResult, winners
from sentinel.store import Store

TINY = ["--block-size", "32", "--batch-size", "4", "--eval-tokens", "64", "--analysis-samples", "4",
        "--speed-runs", "1", "--lr", "5e-3", "--device", "cpu"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "home"))


def test_benchmark_runs_the_grid_and_writes_results_and_charts(tiny_lm_dir, tiny_text_file, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["benchmark", "--model", str(tiny_lm_dir), "--text", str(tiny_text_file), "--strategies",
                 "magnitude,random", "--levels", "0.25,0.5", "--steps", "2", "--distill", *TINY, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "after fine-tuning: " in printed and " wins with mean perplexity " in printed
    table = pd.read_csv(out / "results.csv")
    assert list(zip(table.strategy, table.level)) == [("magnitude", 0.25), ("magnitude", 0.5),
                                                      ("random", 0.25), ("random", 0.5)]
    assert list(table.heads_pruned) == [2, 4, 2, 4]                      # of 8 heads; removed, so params drop
    assert (table.params < json.loads((out / "results.json").read_text())["baseline"]["params"]).all()
    assert table.perplexity_finetuned.notna().all() and table.perplexity_distilled.notna().all()
    assert (table.steps == 2).all()
    result = BenchmarkResult.from_dict(json.loads((out / "results.json").read_text()))
    assert result.complete and set(result.winners) == {"perplexity_pruned", "perplexity_finetuned",
                                                       "perplexity_distilled"}
    for name in ("perplexity", "speed"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        html = (out / f"{name}.html").read_text()
        assert "vega" in html and "cdn.jsdelivr" not in html              # works offline
    store = Store()
    runs = store.list_experiments(kind="benchmark-run")
    assert len(runs) == 8                                                 # 4 cells x (fine-tune, distil)
    assert {(r.config["strategy"], r.config["pruning_ratio"], r.config["distill"]) for r in runs} == {
        (s, level, d) for s in ("magnitude", "random") for level in (0.25, 0.5) for d in (False, True)}
    [parent] = store.list_experiments(kind="benchmark")
    assert parent.status == "done" and parent.summary["cells"] == 4


@pytest.mark.parametrize("args, message", [
    (["--strategies", "entropy,bogus"], "Unknown strategy 'bogus'"),
    (["--levels", "0.1,1.0"], "outside [0, 1)"),
    (["--levels", "-0.1"], "outside [0, 1)"),
    (["--levels", "0.1,half"], "is not a number"),
    (["--steps", "0"], "--steps must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, tmp_path, capsys):
    full = ["benchmark", "--steps", "2", "--out", str(tmp_path / "b"), *args]
    assert main(full) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "b").exists()


def test_unwritable_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["benchmark", "--steps", "2", "--out", str(blocker / "b")]) == 2
    assert "Cannot create the output folder" in capsys.readouterr().err


def test_winners_by_hand():
    rows = [
        {"strategy": "a", "level": 0.1, "perplexity_pruned": 20.0, "perplexity_finetuned": 11.0},
        {"strategy": "b", "level": 0.1, "perplexity_pruned": 25.0, "perplexity_finetuned": 10.0},
        {"strategy": "a", "level": 0.5, "perplexity_pruned": 40.0, "perplexity_finetuned": 15.0},
        {"strategy": "b", "level": 0.5, "perplexity_pruned": 50.0, "perplexity_finetuned": 12.0},
    ]
    verdicts = winners(rows)
    assert verdicts["perplexity_pruned"]["per_level"]["0.1"] == {
        "strategy": "a", "perplexity": 20.0, "runner_up": "b", "margin_percent": pytest.approx(25.0)}
    assert verdicts["perplexity_finetuned"]["mean_over_levels"] == {"b": 11.0, "a": 13.0}
    assert "perplexity_distilled" not in verdicts
    result = BenchmarkResult({}, {}, rows, verdicts, True, "cpu", "today")
    assert verdict(result).splitlines() == [
        "right after pruning: a wins with mean perplexity 30.000 over the levels, 25.0% below b (37.500)",
        "after fine-tuning: b wins with mean perplexity 11.000 over the levels, 18.2% below a (13.000)",
    ]


def test_benchmark_with_units_prunes_a_share_of_the_prunable_parameters(tiny_lm_dir, tiny_text_file, tmp_path,
                                                                         capsys):
    out = tmp_path / "units"
    code = main(["benchmark", "--model", str(tiny_lm_dir), "--text", str(tiny_text_file), "--strategies", "magnitude",
                 "--levels", "0.3", "--units", "heads,neurons", "--allocation", "uniform", "--steps", "1", *TINY,
                 "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out / "results.csv")
    assert table.neurons_pruned[0] > 0 and table.heads_pruned[0] > 0
    assert table.prunable_share_removed[0] == pytest.approx(0.3, abs=0.05)
    capsys.readouterr()
    assert main(["benchmark", "--units", "experts", "--steps", "1", "--out", str(tmp_path / "x"), *TINY]) == 2
    assert "Unknown unit kind experts" in capsys.readouterr().err
