"""The Compare page's plain parts: the models it offers, the choice limit, sizes and the speed table."""

from __future__ import annotations

import pytest

from sentinel.errors import DataError
from sentinel.evaluation.paired import InterleavedSpeed, ModelTimings
from sentinel.evaluation.size import parameter_count, weight_bytes
from sentinel.store import Store
from sentinel.ui.compare import (MAX_MODELS, check_choice, default_choice, library_candidates, session_candidates,
                                 size_figures, speed_table)
from sentinel.ui.finetune import CHECKPOINTS, DASHBOARD_FINETUNE
from sentinel.ui.library import exports_dir, models_dir


def _folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_the_library_offers_saved_exported_and_finetuned_folders_with_html_safe_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    _folder(models_dir() / "a-b")
    _folder(models_dir() / "a_b")
    (models_dir() / "no-config").mkdir()
    _folder(exports_dir() / "stock")
    store = Store()
    out = tmp_path / "dashboard" / "run1"
    final, best = _folder(out / "model"), _folder(out / CHECKPOINTS / "step-4")
    job = store.create_job(DASHBOARD_FINETUNE, {"out": str(out)}, "cpu")
    store.set_job_state(job, "succeeded", result={"model": str(final)})
    store.set_job_state(store.create_job(DASHBOARD_FINETUNE, {"out": str(tmp_path / "x")}, "cpu"), "failed")
    found = library_candidates(store)
    labels = {c.label: c for c in found}
    assert set(labels) == {"a-b (saved)", "a_b (saved)", "stock (exported)", f"Fine-tune {job[:8]}: final model",
                           f"Fine-tune {job[:8]}: best checkpoint (step 4)"}
    keys = [c.key for c in found]
    assert len(set(keys)) == len(keys) and all(k.replace("_", "").isalnum() for k in keys)
    assert labels["stock (exported)"].path == str(exports_dir() / "stock")
    assert labels[f"Fine-tune {job[:8]}: best checkpoint (step 4)"].path == str(best)
    skipped = library_candidates(store, skip=[str(final)])               # the session's own fine-tuned model
    assert f"Fine-tune {job[:8]}: final model" not in {c.label for c in skipped}


def test_session_models_default_to_base_pruned_and_tuned_and_at_most_four_are_compared():
    held = session_candidates(has_tuned=True, has_sparse=True)
    assert [c.key for c in held] == ["base", "pruned", "tuned", "sparse"]
    assert default_choice(held) == ["base", "pruned", "tuned"]
    assert default_choice(session_candidates(False, False)) == ["base", "pruned"]
    check_choice(["a"] * MAX_MODELS)
    with pytest.raises(DataError, match="at most 4 models side by side; 5 are chosen"):
        check_choice(["a"] * 5)
    with pytest.raises(DataError, match="at least one model"):
        check_choice([])


def test_sizes_count_zeros_and_the_saved_files(tiny_lm, tmp_path):
    import torch

    model, _ = tiny_lm
    dense = size_figures(model)
    assert (dense.parameters, dense.dense_bytes, dense.stored_bytes) == (parameter_count(model), weight_bytes(model),
                                                                        None)
    body = next(p for name, p in model.named_parameters() if p.dim() == 2 and ".h." in f".{name}")
    with torch.no_grad():
        body.zero_()                                                    # one body matrix all zeros
    with pytest.raises(DataError, match="model.safetensors"):
        size_figures(model, tmp_path)                                   # no weight file: said, not 0 bytes
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    zeroed = size_figures(model, tmp_path)
    assert zeroed.nonzero == dense.nonzero - body.numel() and zeroed.stored_bytes == 10
    assert zeroed.compressed_bytes is None and "Bitmask-compressed file" not in zeroed.rows()
    assert zeroed.rows()["Weights as stored"] == "0.00 MiB"
    (tmp_path / "model.sparse.safetensors").write_bytes(b"x" * 7)      # the Weights page's bitmask copy
    both = size_figures(model, tmp_path)
    assert (both.stored_bytes, both.compressed_bytes) == (10, 7)       # counted apart, never summed
    assert "Bitmask-compressed file" in both.rows()


def test_size_values_fit_a_quarter_width_column_and_the_detail_is_help_text(tiny_lm):
    """Issue 22 #13: 'Weights as stored' read 'not saved (i…' in a four-model Compare: values stay short, the
    explanation goes to the metric's help."""
    model, _ = tiny_lm
    figures = size_figures(model)
    # 14 characters: as long as '12.35 M (100%)', the longest value that showed whole at 1024 px
    assert all(len(value) <= 14 for value in figures.rows().values()), figures.rows()
    assert "session" in figures.help()["Weights as stored"] and "save it" in figures.help()["Weights as stored"]


def test_the_speed_table_states_each_model_against_the_first():
    speed = InterleavedSpeed((ModelTimings("a", (100.0, 100.0, 100.0), (10.0, 10.0, 10.0)),
                              ModelTimings("b", (150.0, 160.0, 140.0), (9.0, 11.0, 10.0))), 3, 64, 16, 1)
    assert InterleavedSpeed.from_dict(speed.to_dict()) == speed           # what the Compare speed job returns
    table = speed_table(speed, {"a": "Base model", "b": "Pruned"})
    assert list(table.index) == ["Base model", "Pruned"]
    assert table.loc["Base model", "Prefill vs. first"] == "reference"
    assert table.loc["Pruned", "Prefill tokens/s"] == "150 (140–160)"
    assert table.loc["Pruned", "Prefill vs. first"] == "1.50× faster (1.40–1.60×, 3 interleaved pairs)"
    assert (table.loc["Pruned", "Generation vs. first"]
            == "no measurable difference (0.90–1.10×, 3 interleaved pairs)")


def test_a_failed_speed_job_start_leaves_no_model_copy(tmp_path, monkeypatch):
    """Saving the session's models for the job, then failing to submit: the copies are removed, not left behind."""
    from pathlib import Path

    import pytest
    from transformers import GPT2Config, GPT2LMHeadModel

    from sentinel.errors import JobError
    from sentinel.ui import compare as compare_module
    from sentinel.ui.compare import TimedModel, start_speed_job

    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32)).eval()

    class RefusingJobs:
        def submit(self, kind, params, device="auto"):
            saved = [entry["path"] for entry in params["models"] if entry["copy"]]
            assert saved and all((Path(p) / "model.safetensors").is_file() for p in saved)   # the copy was made
            raise JobError("the job store is read-only")

    models = [TimedModel("base", "Base model", None, "cpu", "float32", model, None)]
    with pytest.raises(JobError):
        start_speed_job(RefusingJobs(), models, "sig")
    runs = tmp_path / compare_module.SPEED_RUNS
    assert not runs.exists() or not any(runs.iterdir())
