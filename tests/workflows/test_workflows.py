"""sentinel.workflows: RunSummary, the shared recorder used by all three orchestrators, the plasticity job's
cancel through the store, the old public names, and the package boundaries."""

from __future__ import annotations

import ast
import importlib
import math
import threading
from pathlib import Path

import pytest

import sentinel
from sentinel.jobs import JobManager
from sentinel.store import Store
from sentinel.training.config import FineTuneConfig
from sentinel.workflows.recorder import RunRecorder
from sentinel.workflows.summary import RunSummary
from tests.conftest import make_tiny_lm

PACKAGE = Path(sentinel.__file__).parent


def test_run_summary_round_trips_and_flattens_its_extra():
    summary = RunSummary(status="completed", baseline_perplexity=20.5, perplexity_pruned=31.25, perplexity_after=22.0,
                         params_before=1000, params_after=900, heads_pruned=2, active_heads=6,
                         extra={"pruned_heads": {"0": [1]}, "finetune": {"steps": 3}})
    data = summary.to_dict()
    assert data["perplexity_after"] == 22.0 and data["pruned_heads"] == {"0": [1]} and "extra" not in data
    assert RunSummary.from_dict(data) == summary
    assert RunSummary.from_dict(RunSummary().to_dict()) == RunSummary()
    assert summary.final_perplexity == 22.0
    assert RunSummary(perplexity_pruned=31.25).final_perplexity == 31.25


def test_run_summary_reads_records_written_under_the_old_names():
    old = RunSummary.from_dict({"final_perplexity": 17.0, "perplexity_before": 25.0, "out": "x"})
    assert (old.perplexity_after, old.perplexity_pruned, old.extra) == (17.0, 25.0, {"final_perplexity": 17.0,
                                                                                       "perplexity_before": 25.0,
                                                                                       "out": "x"})
    dashboard = RunSummary.from_dict({"protocol_perplexity_after": 9.0, "perplexity_after": 12.0})
    assert dashboard.perplexity_after == 9.0                     # the dashboard's protocol measurement wins
    assert RunSummary.from_dict({"perplexity_after": math.nan}).final_perplexity is None


def test_the_recorder_writes_to_the_store_and_remembers(tmp_path):
    store = Store(tmp_path / "s.db")
    recorder = RunRecorder.start(store, "r", {"a": 1}, "experiment")
    recorder.record_perplexity("pruned", 12.0)
    recorder.record_pruning({1: [0, 2]}, "mask")
    recorder.write_summary(RunSummary(perplexity_pruned=12.0, extra={"out": "o"}), status="done")
    record = store.get_experiment(recorder.experiment_id)
    assert record.status == "done" and RunSummary.from_dict(record.summary).perplexity_pruned == 12.0
    assert recorder.stored_summary().extra == {"out": "o"}
    assert [p.value for p in store.get_curves(recorder.experiment_id)["perplexity_pruned"]] == [12.0]
    assert [(r["layer"], r["head"]) for r in store.get_pruned_heads(recorder.experiment_id)] == [(1, 0), (1, 2)]
    assert RunRecorder.from_dict(recorder.to_dict()).to_dict() == recorder.to_dict()


def test_all_three_workflows_record_through_the_run_recorder(tiny_lm_dir, tiny_text_file, tmp_path, monkeypatch):
    """Experiment, benchmark and plasticity each write their summaries as RunSummary through RunRecorder."""
    from sentinel.data import TextBlocks, cut_blocks, join_documents
    from sentinel.workflows.benchmark import BenchmarkConfig, run_benchmark
    from sentinel.workflows.experiment import ExperimentConfig, run_experiment
    from sentinel.workflows.plasticity import UpgrayeddPipeline
    from tests.conftest import TINY_TEXTS

    written: list[tuple[str, RunSummary, str | None]] = []
    original = RunRecorder.write_summary

    def spy(self, summary, status=None):
        assert isinstance(summary, RunSummary)
        written.append((self.store.get_experiment(self.experiment_id).kind, summary, status))
        original(self, summary, status)

    monkeypatch.setattr(RunRecorder, "write_summary", spy)
    store = Store(tmp_path / "s.db")
    tiny = FineTuneConfig(batch_size=4, block_size=32, eval_every=0, eval_max_tokens=64, device="cpu")
    run_experiment(ExperimentConfig(model=str(tiny_lm_dir), strategy="magnitude", pruning_ratio=0.25, steps=1,
                                    finetune=tiny, output_dir=str(tmp_path / "exp"), text=str(tiny_text_file),
                                    analysis_samples=4, prompts=["Return the"], sample_tokens=3), store)
    run_benchmark(BenchmarkConfig(out=str(tmp_path / "bench"), strategies=["magnitude"], levels=[0.25], steps=1,
                                  model=str(tiny_lm_dir), text=str(tiny_text_file), finetune=tiny,
                                  analysis_samples=4, speed_runs=1, speed_prompt_tokens=8, speed_new_tokens=2),
                  store)
    model, tokenizer = make_tiny_lm()
    blocks = cut_blocks(join_documents(tokenizer, TINY_TEXTS * 3), 32)
    loader = TextBlocks(blocks, 32, "tiny", len(TINY_TEXTS), tokenizer.pad_token_id).dataloader(batch_size=4)
    UpgrayeddPipeline(model, tokenizer, "magnitude", "cpu", pruning_ratio=0.25, store=store).run_optimization(
        loader, num_cycles=1, epochs_per_cycle=0.25)

    finals = {kind: summary for kind, summary, status in written if status in ("done", "completed")}
    assert set(finals) == {"experiment", "benchmark", "benchmark-run", "plasticity"}
    for kind in ("experiment", "benchmark-run", "plasticity"):
        stored = RunSummary.from_dict(store.list_experiments(kind=kind)[0].summary)
        assert stored.perplexity_after is not None and stored.perplexity_after > 1, kind
        assert stored.perplexity_after == finals[kind].perplexity_after
    assert RunSummary.from_dict(store.list_experiments(kind="benchmark")[0].summary).baseline_perplexity > 1


def test_a_plasticity_job_is_cancelled_through_the_store(tiny_lm_dir, tiny_text_file, tmp_path):
    from sentinel.workflows.plasticity import PlasticityConfig, submit_plasticity

    store = Store(tmp_path / "s.db")
    first_loss = threading.Event()

    def listen(job_id: str, event: dict) -> None:
        if event["type"] == "progress" and event.get("loss") is not None:
            first_loss.set()

    config = PlasticityConfig(model=str(tiny_lm_dir), text=str(tiny_text_file), strategy="magnitude", num_cycles=50,
                              epochs_per_cycle=20, pruning_ratio=0.25,
                              finetune=FineTuneConfig(batch_size=4, block_size=32, eval_every=0, eval_max_tokens=64,
                                                      learning_rate=5e-3, device="cpu"))
    assert PlasticityConfig.from_dict(config.to_dict()) == config
    with JobManager(store) as manager:
        manager.subscribe(listen)
        job_id, experiment = submit_plasticity(manager, config)
        assert first_loss.wait(300)
        Store(tmp_path / "s.db").request_cancel(job_id)      # as `sentinel jobs cancel` from another process does
        job = manager.wait(job_id, timeout=300)
    assert job.state == "cancelled", job.error
    record = store.get_experiment(experiment)
    assert record.kind == "plasticity" and record.status == "cancelled"
    assert RunSummary.from_dict(record.summary).status == "cancelled"
    assert job.result["cycles_done"] < 50


def test_bad_plasticity_settings_are_refused_before_loading():
    from sentinel.errors import SentinelError
    from sentinel.workflows.plasticity import PlasticityConfig

    with pytest.raises(SentinelError, match="num_cycles"):
        PlasticityConfig(num_cycles=0).validate()
    with pytest.raises(SentinelError, match="Unknown plasticity settings"):
        PlasticityConfig.from_dict({"cycles": 3})


@pytest.mark.parametrize("old, new, names", [
    ("sentinel.pruning.experiment_runner", "sentinel.workflows.experiment",
     ["run_experiment", "ExperimentConfig", "ProgressTracker", "submit_experiment", "run_experiment_job"]),
    ("sentinel.pruning.benchmark", "sentinel.workflows.benchmark",
     ["BenchmarkConfig", "BenchmarkResult", "run_benchmark", "run_benchmark_job", "winners", "write_charts",
      "RESULT_COLUMNS"]),
    ("sentinel.upgrayedd", "sentinel.workflows.plasticity", ["UpgrayeddPipeline", "UpgrayeddResult", "CycleRecord"]),
])
def test_the_old_public_names_are_the_workflow_objects(old, new, names):
    before, after = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(before, name) is getattr(after, name), name
    assert importlib.import_module("sentinel.pruning.experiment_runner").ProgressTracker is RunRecorder
    assert callable(importlib.import_module("sentinel.upgrayedd").UpgrayeddPipeline.run_optimization)


def _imports(folder: Path) -> dict[Path, set[str]]:
    found = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[path] = names
    return found


def test_layering_models_below_pruning_below_workflows():
    for path, names in _imports(PACKAGE / "models").items():
        assert not any(n.startswith(("sentinel.pruning", "sentinel.workflows")) for n in names), path
    shims = {PACKAGE / "pruning" / "experiment_runner.py", PACKAGE / "pruning" / "benchmark.py"}
    for path, names in _imports(PACKAGE / "pruning").items():
        if path not in shims:
            assert not any(n.startswith("sentinel.workflows") for n in names), path


def test_fine_tuning_settings_are_defined_once_and_the_cli_flags_match_them():
    """FineTuneConfig is nested in the three workflow configs; old flat records still load; every fine-tuning
    CLI flag of finetune/benchmark names a FineTuneConfig field, and benchmark's defaults are BenchmarkConfig's."""
    import argparse
    from dataclasses import fields

    from sentinel.commands import benchmark as benchmark_command
    from sentinel.commands import finetune as finetune_command
    from sentinel.commands.common import FINETUNE_FLAGS, finetune_settings
    from sentinel.workflows.benchmark import BenchmarkConfig
    from sentinel.workflows.experiment import ExperimentConfig
    from sentinel.workflows.plasticity import PlasticityConfig

    names = {f.name for f in fields(FineTuneConfig)}
    assert set(FINETUNE_FLAGS.values()) <= names
    for cls in (ExperimentConfig, BenchmarkConfig, PlasticityConfig):
        own = {f.name for f in fields(cls)}
        assert "finetune" in own and not own & (names - {"distill"}) - {"steps"}, cls
    old = ExperimentConfig.from_dict({"strategy": "random", "batch_size": 3, "eval_tokens": 99, "device": "cpu"})
    assert (old.finetune.batch_size, old.finetune.eval_max_tokens, old.device) == (3, 99, "cpu")
    assert ExperimentConfig.from_dict(old.to_dict()) == old
    bench = BenchmarkConfig(out="x")
    assert BenchmarkConfig.from_dict(bench.to_dict()) == bench

    for command, expected in ((finetune_command, None), (benchmark_command, bench.finetune)):
        parser = argparse.ArgumentParser()
        command.register(parser.add_subparsers())
        sub = parser._subparsers._group_actions[0].choices
        args = next(iter(sub.values())).parse_args([a for a in ("--steps", "1", "--out", "o")])
        settings = finetune_settings(args)
        assert settings and set(settings) <= names
        if expected is not None:
            for field, value in settings.items():
                if field != "distill":
                    assert value == getattr(expected, field), field
