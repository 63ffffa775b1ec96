"""`sentinel compress` and `run_compress`: budget targets, export, bad input, cancellation, speed targets."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import transformers

from sentinel.cli import main
from sentinel.jobs import JobCancelled, JobManager
from sentinel.models import load_model
from sentinel.models.flops import forward_flops
from sentinel.pruning.budget import prunable_params
from sentinel.store import Store
from sentinel.workflows.compress import CompressConfig, CompressError, run_compress, versus_random


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def config(tiny_lm_dir, tiny_text_file, out, **kw) -> CompressConfig:
    base = dict(out=str(out), target="params=0.5", model=str(tiny_lm_dir), calibration_text=str(tiny_text_file),
                text=str(tiny_text_file), calibration_samples=8, seq_len=16, batch_size=2)
    return CompressConfig(**{**base, **kw})


@pytest.mark.parametrize("target,units,allocation", [("params=0.5", ["head", "neuron"], "global"),
                                                     ("flops=0.3", ["neuron"], "uniform"),
                                                     ("params=0.4", ["head", "neuron", "layer"], "global")])
def test_budget_targets_are_met_exactly_or_as_closely_as_one_unit_allows(tiny_lm_dir, tiny_text_file, tmp_path,
                                                                         target, units, allocation):
    summary = run_compress(config(tiny_lm_dir, tiny_text_file, tmp_path / "o", target=target, units=units,
                                  allocation=allocation),
                           device="cpu")
    kind, share = target.split("=")
    before, after = ((summary["prunable_params_before"], summary["prunable_params_after"]) if kind == "params" else
                     (summary["body_flops_before"], summary["body_flops_after"]))
    goal = round(float(share) * before)
    removed = before - after
    budget = summary["budget"]
    # the saved model has exactly the cost the budget predicted
    model = load_model(summary["model"], device="cpu").model
    assert prunable_params(model) == summary["prunable_params_after"] == budget["prunable_params_after"]
    assert forward_flops(model, 16, lm_head=False) == summary["body_flops_after"] == budget["flops_after"]
    if budget["exact"]:
        assert removed == goal and budget["reason"] == ""
    else:   # whole units: off by less than the largest single unit, and the reason says so
        assert 0 < abs(removed - goal) and "closest feasible" in budget["reason"]
        assert abs(removed - goal) < 0.1 * before
    assert summary["metric"] in ("magnitude", "gradient", "random")
    assert {row["metric"] for row in summary["metric_comparison"]} == {"magnitude", "gradient", "random"}
    assert summary["metric"] == min(summary["metric_comparison"], key=lambda r: r["loss"])["metric"]
    assert set(summary["perplexity"]) >= {"original", "pruned"}
    assert json.loads((tmp_path / "o" / "result.json").read_text())["params_after"] == summary["params_after"]


def test_cli_compress_recovers_finetunes_exports_and_records(tiny_lm_dir, tiny_text_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["compress", "--model", str(tiny_lm_dir), "--device", "cpu", "--target", "params=0.3", "--units",
                 "neurons", "--allocation", "uniform", "--calibration-text", str(tiny_text_file), "--text",
                 str(tiny_text_file), "--calibration-samples", "8", "--seq-len", "16", "--finetune-steps", "2",
                 "--distill", "--batch-size", "2", "--export", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert list(summary["perplexity"]) == ["original", "pruned", "recovered", "finetuned"]
    assert summary["baseline_perplexity"] == summary["perplexity"]["original"]
    assert summary["perplexity_after"] == summary["perplexity"]["finetuned"]
    assert summary["recovery"]["method"] == "lstsq" and summary["finetune"]["steps"] == 2
    assert [row["metric"] for row in summary["metric_comparison"]][-1] == "random"
    assert len(summary["versus_random"]) == 2                          # magnitude and gradient against random
    # the export loads with plain transformers and computes what the Sentinel model computes
    stock = transformers.AutoModelForCausalLM.from_pretrained(out / "export").eval()
    ours = load_model(out / "model", device="cpu").model.eval()
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(stock(ids).logits, ours(ids).logits, atol=1e-5)
    assert stock.config.n_inner == summary["export"]["mlp_width"] < 128
    store = Store()
    job = store.get_job(summary["job"])
    assert job.kind == "compress" and job.state == "succeeded"
    experiment = store.get_experiment(summary["experiment"])
    assert experiment.summary["params_after"] == summary["params_after"]


@pytest.mark.parametrize("args,message", [
    (["--target", "speed=0.5"], "ratio above 1"),
    (["--target", "params=1.5"], "(0, 1)"),
    (["--target", "size=0.5"], "Cannot read target"),
    (["--target", "params=0.5", "--units", "heads,experts"], "Unknown unit kind experts"),
    (["--target", "params=0.5", "--units", "layers", "--allocation", "uniform"], "allocated globally"),
    (["--target", "params=0.5", "--distill"], "--finetune-steps"),
    (["--target", "params=0.5", "--metrics", "entropy_of_nothing"], "applies to none"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, capsys):
    code = main(["compress", "--out", str(tmp_path / "never"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


def test_cancel_stops_the_job_at_the_next_stage_and_saves_nothing(tiny_lm_dir, tiny_text_file, tmp_path):
    store = Store()
    manager = JobManager(store)
    seen = []

    def cancel_on_first_progress(job_id, event):
        if event.get("type") == "progress" and not seen:
            seen.append(event["step"])
            # the manager's cancel: sets the job's event now and records the request in the store (another
            # process's `sentinel jobs cancel ID` does only the latter, seen within CANCEL_POLL_SECONDS)
            manager.cancel(job_id)

    manager.subscribe(cancel_on_first_progress)
    try:
        job_id = manager.submit("compress", config(tiny_lm_dir, tiny_text_file, tmp_path / "c").to_dict(),
                                device="cpu")
        record = manager.wait(job_id, timeout=120)
    finally:
        manager.shutdown()
    assert seen == [1] and record.state == "cancelled" and store.cancel_requested(job_id)
    assert not (tmp_path / "c" / "model").exists()


def test_should_stop_raises_job_cancelled(tiny_lm_dir, tiny_text_file, tmp_path):
    with pytest.raises(JobCancelled):
        run_compress(config(tiny_lm_dir, tiny_text_file, tmp_path / "s"), device="cpu", should_stop=lambda: True)


def test_unreachable_speed_target_says_what_was_measured(tiny_lm_dir, tiny_text_file, tmp_path):
    with pytest.raises(CompressError, match=r"speed=1000.0 was not reached: the best measured prefill speed-up") as err:
        run_compress(config(tiny_lm_dir, tiny_text_file, tmp_path / "v", target="speed=1000", speed_repeats=2,
                            speed_iterations=2, prompt_tokens=8, new_tokens=2), device="cpu")
    # 1 - 1/1000 is above the 95% cap, so the first try is already the last
    assert "interleaved pairs" in str(err.value) and "after 1 try up to 95%" in str(err.value)
    assert not (tmp_path / "v" / "model").exists()


def test_compress_help_does_not_import_torch():
    import subprocess
    import sys
    from pathlib import Path

    check = ("import sys\nfrom sentinel.cli import build_parser\ntry:\n    build_parser().parse_args(['compress', "
             "'--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", check], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--target" in done.stdout and done.stdout.strip().splitlines()[-1] == "False False"


def test_random_selection_is_measured_with_its_seeds_beside_the_metrics(tiny_lm_dir, tiny_text_file, tmp_path):
    summary = run_compress(config(tiny_lm_dir, tiny_text_file, tmp_path / "r", recover="none", seed=5,
                                  random_seeds=3), device="cpu")
    rows = {row["metric"]: row for row in summary["metric_comparison"]}
    assert list(rows) == ["magnitude", "gradient", "random"]
    random = rows["random"]
    assert [s["seed"] for s in random["seeds"]] == [5, 6, 7]
    losses = [s["loss"] for s in random["seeds"]]
    assert len(set(losses)) > 1                                      # the seeds draw different plans
    assert random["loss"] == statistics.median(losses) and random["seed"] in (5, 6, 7)
    assert random["perplexity_low"] == pytest.approx(math.exp(min(losses)))
    assert random["perplexity_high"] == pytest.approx(math.exp(max(losses)))
    assert random["per_kind"] == {"head": "random", "neuron": "random"}
    assert random["counts"] == rows["magnitude"]["counts"]          # the same budget for every candidate
    for name in ("magnitude", "gradient"):
        assert rows[name]["beats_random"] == (rows[name]["loss"] < random["loss"])
    assert len(summary["versus_random"]) >= 2
    assert all("random" in line and "over 3 seeds" in line for line in summary["versus_random"])
    assert summary["metric"] == min(summary["metric_comparison"], key=lambda r: r["loss"])["metric"]


def test_random_seeds_zero_skips_random_and_bad_counts_are_refused(tiny_lm_dir, tiny_text_file, tmp_path):
    summary = run_compress(config(tiny_lm_dir, tiny_text_file, tmp_path / "n", recover="none", random_seeds=0,
                                  metrics=["magnitude"]), device="cpu")
    assert [row["metric"] for row in summary["metric_comparison"]] == ["magnitude"]
    assert summary["versus_random"] == []
    with pytest.raises(CompressError, match="random-seeds must be 0 or more"):
        config(tiny_lm_dir, tiny_text_file, tmp_path / "x", random_seeds=-1).validate()
    with pytest.raises(CompressError, match="--random-seeds"):
        config(tiny_lm_dir, tiny_text_file, tmp_path / "x", random_seeds=0, metrics=["random"]).validate()


def _row(metric: str, perplexity: float) -> dict:
    return {"metric": metric, "loss": math.log(perplexity), "perplexity": perplexity}


def _random_row(*perplexities: float) -> dict:
    losses = sorted(math.log(p) for p in perplexities)
    median = statistics.median(losses)
    return {"metric": "random", "loss": median, "perplexity": math.exp(median), "seed": 1,
            "perplexity_low": min(perplexities), "perplexity_high": max(perplexities),
            "seeds": [{"seed": i, "loss": math.log(p), "perplexity": p} for i, p in enumerate(perplexities)]}


def test_a_metric_worse_than_the_random_median_is_said_plainly():
    comparison = [_row("magnitude", 140.2), _row("gradient", 185.9), _row("wanda", 153.1),
                  _random_row(151.3, 155.2, 159.3)]
    assert versus_random(comparison) == [
        "magnitude: 140.2 — better than every random seed (median 155.2 over 3 seeds, range 151.3–159.3)",
        "gradient: 185.9 — worse than random (median 155.2 over 3 seeds, range 151.3–159.3)",
        "wanda: 153.1 — better than random's median but inside its range (median 155.2 over 3 seeds, range "
        "151.3–159.3)",
    ]
    lost = versus_random([_row("gradient", 185.9), _random_row(151.3, 155.2, 159.3)])
    assert lost[0] == "no metric beat random selection: compress uses random seed 1, the median of 3 seeds"
    assert lost[1].startswith("gradient: 185.9 — worse than random (median 155.2")
    assert versus_random([_row("gradient", 185.9)]) == []                      # random not measured: nothing said


def test_cli_compress_prints_the_comparison_and_each_metric_against_random(tiny_lm_dir, tiny_text_file, tmp_path,
                                                                          capsys):
    code = main(["compress", "--model", str(tiny_lm_dir), "--device", "cpu", "--target", "params=0.3", "--units",
                 "neurons", "--calibration-text", str(tiny_text_file), "--text", str(tiny_text_file),
                 "--calibration-samples", "8", "--seq-len", "16", "--recover", "none", "--random-seeds", "2",
                 "--out", str(tmp_path / "t")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    summary = json.loads((tmp_path / "t" / "result.json").read_text())
    comparison = next(line for line in lines if line.startswith("metric comparison"))
    assert "random" in comparison and "(median)" in comparison
    for verdict in summary["versus_random"]:
        assert f"  {verdict}" in lines
    assert any("random" in v and "over 2 seeds" in v for v in summary["versus_random"])
