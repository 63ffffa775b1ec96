"""Saved-model folders and zips under the data folder; the fine-tune request and pruning summary."""

import io
import zipfile

import pytest
import torch

from sentinel.errors import SentinelError
from sentinel.models import LoadedModel, get_layout, load_model, save_model
from sentinel.training.config import TrainingConfigError
from sentinel.ui.finetune import FineTuneRequest, pruning_summary
from sentinel.ui.library import model_folder_for, saved_models, zip_folder
from sentinel.ui.session import WorkingModel
from tests.conftest import make_tiny_model


def test_names_stay_inside_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    assert model_folder_for("gpt2-pruned_30.v1") == tmp_path / "models" / "gpt2-pruned_30.v1"
    for bad in ("../escape", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(SentinelError, match="not a usable name"):
            model_folder_for(bad)


def test_saved_models_are_listed_and_zipped(tmp_path, monkeypatch, tiny_lm):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    model, tokenizer = tiny_lm
    assert saved_models() == []
    folder = save_model(model, tokenizer, model_folder_for("tiny"), note={"how": "test"})
    assert saved_models() == [folder]
    archive = zipfile.ZipFile(io.BytesIO(zip_folder(folder)))
    names = set(archive.namelist())
    assert {"tiny/config.json", "tiny/model.safetensors", "tiny/sentinel_pruning.json"} <= names
    assert archive.read("tiny/config.json") == (folder / "config.json").read_bytes()
    with pytest.raises(SentinelError, match="save the model first"):
        zip_folder(tmp_path / "missing")


def test_a_saved_session_model_loads_with_its_pruning(tmp_path, tiny_lm):
    model, tokenizer = tiny_lm
    working = WorkingModel(LoadedModel(model, tokenizer, get_layout(model), torch.device("cpu"), "tiny", 0.0))
    working.apply({0: [1]}, "mask", "a")
    working.apply({1: [0, 2]}, "remove", "b")
    folder = save_model(working.model, tokenizer, tmp_path / "saved")
    again = load_model(folder)
    ids = torch.tensor([[5, 9, 3, 7]])
    assert torch.allclose(again.model(ids).logits, working.model(ids).logits, atol=1e-5)
    assert WorkingModel(again).status() == working.status()


def test_finetune_request_config():
    config = FineTuneRequest(steps=60, learning_rate=3e-4, distill=True, batch_size=4, block_size=64).config("cpu")
    assert (config.max_steps, config.learning_rate, config.distill, config.batch_size, config.block_size) == (
        60, 3e-4, True, 4, 64)
    assert config.eval_every == 12 and config.checkpoint_every == 12      # five evaluations per run
    assert FineTuneRequest(steps=3).config("cpu").eval_every == 1
    with pytest.raises(TrainingConfigError, match="learning_rate"):
        FineTuneRequest(learning_rate=0.0).config("cpu")


def test_pruning_summary_names_strategy_and_level():
    model = make_tiny_model("gpt2")
    working = WorkingModel(LoadedModel(model, None, get_layout(model), torch.device("cpu"), "tiny", 0.0))
    assert pruning_summary(working)["strategy"] == "none" and pruning_summary(working)["pruning_ratio"] == 0.0
    working.apply({0: [0, 1], 2: [3]}, "mask", "entropy 25%", strategy="entropy", ratio=0.25)
    summary = pruning_summary(working)
    assert summary["strategy"] == "entropy" and summary["pruning_ratio"] == 0.25      # 3 of 12 heads
    working.apply({1: [1]}, "mask", "selection of 1 heads")
    assert pruning_summary(working)["strategy"] == "mixed"
    assert len(pruning_summary(working)["dashboard_steps"]) == 2


def test_torch_threads_for_the_app(monkeypatch):
    import torch

    from sentinel.ui.state import configure_torch_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SENTINEL_TORCH_THREADS", "1")
        configure_torch_threads.cache_clear()
        assert configure_torch_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("SENTINEL_TORCH_THREADS", "two")
        configure_torch_threads.cache_clear()
        with pytest.raises(SentinelError, match="not a whole number"):
            configure_torch_threads()
    finally:
        configure_torch_threads.cache_clear()
        torch.set_num_threads(before)


def test_the_finetune_texts_are_the_ones_the_job_reads(tmp_path, monkeypatch):
    from pathlib import Path

    from sentinel.ui.finetune import finetune_texts

    stdlib = Path(__file__).resolve().parents[2] / "assets" / "models" / "stdlib-gpt2"
    loaded = load_model(stdlib)
    copy = save_model(loaded.model, loaded.tokenizer, tmp_path / "start")
    validation = copy / "corpus" / "validation.jsonl"
    assert validation.is_file()
    train = copy / "corpus" / "train.jsonl.gz"
    assert train.read_bytes() == (stdlib / "corpus" / "train.jsonl.gz").read_bytes()   # carried with the copy
    texts = finetune_texts(str(train), str(validation))
    assert texts.train == "stdlib-gpt2's own train split"
    assert texts.validation == "stdlib-gpt2's own validation split"
    assert finetune_texts(None, str(validation)).train == "the bundled stories-gpt2 corpus (its train split)"
    assert finetune_texts(None, None).validation == "the bundled stories-gpt2 corpus's validation split"
    assert str(tmp_path) not in texts.sentence()
