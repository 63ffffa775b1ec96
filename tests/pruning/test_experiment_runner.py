"""Experiments: run_experiment end to end on a tiny setting, its record in the store, and as a job."""

from __future__ import annotations

import json

import pytest

from sentinel.errors import SentinelError
from sentinel.jobs import JobManager, ProgressEvent
from sentinel.pruning import masked_heads
from sentinel.pruning.experiment_runner import ExperimentConfig, ProgressTracker, run_experiment, submit_experiment
from sentinel.store import Store


def tiny_config(model_dir, text, out, **overrides) -> ExperimentConfig:
    values = dict(model=str(model_dir), strategy="magnitude", pruning_ratio=0.25, steps=2, batch_size=4,
                  learning_rate=5e-3, device="cpu", output_dir=str(out), text=str(text), block_size=32,
                  eval_tokens=64, analysis_samples=4, prompts=["Return the"], sample_tokens=5)
    values.update(overrides)
    return ExperimentConfig.from_dict(values)     # the flat fine-tuning names go into the nested FineTuneConfig


def test_run_experiment_prunes_tunes_and_records_everything(tiny_lm_dir, tiny_text_file, tmp_path):
    store = Store(tmp_path / "s.db")
    config = tiny_config(tiny_lm_dir, tiny_text_file, tmp_path / "out", distill=True, strategy="entropy")
    model, tokenizer, summary = run_experiment(config, store)
    assert summary["heads_pruned"] == 2 and summary["active_heads"] == 6        # round(0.25 x 8)
    assert masked_heads(model) == {int(k): v for k, v in summary["pruned_heads"].items()}
    assert summary["finetune"]["steps"] == 2 and summary["status"] == "completed"
    for key in ("baseline_perplexity", "perplexity_pruned", "perplexity_after"):
        assert summary[key] > 1
    assert summary["params_before"] == summary["params_after"]                 # masks keep the weights
    [record] = store.list_experiments()
    assert record.status == "done" and record.config["strategy"] == "entropy" \
        and ExperimentConfig.from_dict(record.config).distill                # stored nested: config["finetune"]
    assert record.summary["perplexity_after"] == summary["perplexity_after"]
    curves = store.get_curves(record.id)
    assert [p.step for p in curves["loss"]] == [1, 2]
    assert {"perplexity_baseline", "perplexity_pruned", "perplexity_finetuned"} <= set(curves)
    assert len(store.get_pruned_heads(record.id)) == 2
    assert [(s.step, s.prompt) for s in store.get_samples(record.id)] == [(0, "Return the"), (2, "Return the")]
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["perplexity_after"] == summary["perplexity_after"]
    progress = ProgressTracker.from_dict(json.loads((tmp_path / "out" / "progress.json").read_text()))
    assert [s for s, _ in progress.losses] == [1, 2]
    assert (tmp_path / "out" / "model" / "sentinel_pruning.json").is_file()
    assert tokenizer is not None


def test_removal_experiment_without_fine_tuning(tiny_lm_dir, tiny_text_file, tmp_path):
    config = tiny_config(tiny_lm_dir, tiny_text_file, tmp_path / "out", steps=0, mode="remove", pruning_ratio=0.5)
    _, _, summary = run_experiment(config, Store(tmp_path / "s.db"))
    assert summary["params_after"] < summary["params_before"]
    assert summary["perplexity_after"] == summary["perplexity_pruned"]


def test_experiment_config_round_trips_and_is_checked(tmp_path):
    config = ExperimentConfig.from_dict(dict(strategy="random", pruning_ratio=0.5, steps=None, epochs=1.5,
                                             distill=True))
    assert config.finetune.distill and config.distill
    assert ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad in (dict(strategy="nope"), dict(pruning_ratio=1.0), dict(steps=-1), dict(steps=3, epochs=1.0),
                dict(mode="cut"), dict(batch_size=0)):
        with pytest.raises(SentinelError):
            ExperimentConfig.from_dict(bad).validate()
    with pytest.raises(SentinelError, match="Unknown experiment settings"):
        ExperimentConfig.from_dict({"ratio": 0.3})


def test_progress_tracker_records_in_memory_and_in_the_store(tmp_path):
    store = Store(tmp_path / "s.db")
    exp = store.create_experiment("t")
    tracker = ProgressTracker(store, exp)
    tracker.record_event(ProgressEvent(step=1, loss=2.5, val_perplexity=12.0))
    tracker.record_perplexity("pruned", 15.0)
    tracker.record_pruning({0: [1]}, "mask")
    tracker.record_sample("Hi", " there", step=1)
    assert tracker.losses == [(1, 2.5)]
    assert tracker.perplexities == [{"stage": "finetune", "step": 1, "perplexity": 12.0},
                                    {"stage": "pruned", "step": 0, "perplexity": 15.0}]
    assert {k: [p.value for p in v] for k, v in store.get_curves(exp).items()} == {
        "loss": [2.5], "val_perplexity": [12.0], "perplexity_pruned": [15.0]}
    assert ProgressTracker.from_dict(tracker.to_dict()).to_dict() == tracker.to_dict()


def test_experiment_runs_as_a_background_job(tiny_lm_dir, tiny_text_file, tmp_path):
    store = Store(tmp_path / "s.db")
    with JobManager(store) as manager:
        job_id, exp = submit_experiment(manager, tiny_config(tiny_lm_dir, tiny_text_file, tmp_path / "out"))
        job = manager.wait(job_id, timeout=300)
    assert job.state == "succeeded", job.error
    assert job.result["heads_pruned"] == 2
    assert [p.step for p in store.get_curves(exp)["loss"]] == [1, 2]     # recorded once, not twice
    assert store.get_experiment(exp).status == "done"


def test_a_cancelled_experiment_job_resumes_its_fine_tune(tiny_lm_dir, tiny_text_file, tmp_path):
    import threading

    store = Store(tmp_path / "s.db")
    first_loss = threading.Event()

    def listen(job_id: str, event: dict) -> None:
        if event["type"] == "progress" and event.get("loss") is not None:
            first_loss.set()

    with JobManager(store) as manager:
        manager.subscribe(listen)
        job_id, exp = submit_experiment(manager, tiny_config(tiny_lm_dir, tiny_text_file, tmp_path / "out", steps=60))
        assert first_loss.wait(300)
        manager.cancel(job_id)
        cancelled = manager.wait(job_id, timeout=300)
        assert cancelled.state == "cancelled"
        stopped_at = store.latest_checkpoint(job_id=job_id).step
        assert store.get_experiment(exp).status == "cancelled"
        manager.resume(job_id)
        job = manager.wait(job_id, timeout=600)
    assert job.state == "succeeded", job.error
    summary = store.get_experiment(exp).summary
    assert summary["finetune"]["start_step"] == stopped_at and summary["finetune"]["steps"] == 60
    assert summary["baseline_perplexity"] > 1 and summary["heads_pruned"] == 2     # kept from the first attempt
    assert store.get_experiment(exp).status == "done"
