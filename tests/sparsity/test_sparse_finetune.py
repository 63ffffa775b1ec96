"""Weight sparsity belongs to the saved model: sparsify → save → load → fine-tune (library, CLI) keeps every zero."""

from __future__ import annotations

import json

import pytest
import torch

from sentinel.cli import main
from sentinel.models import load_model, save_model
from sentinel.models.loading import RECORD_FILE
from sentinel.sparsity import SparsityConfig, find_targets, make_permanent, sparsify
from sentinel.sparsity.masks import is_sparse_pruned
from sentinel.sparsity.record import recorded
from sentinel.training.config import FineTuneConfig
from sentinel.training.finetune import finetune, load_finetune_data
from tests.conftest import make_char_tokenizer, make_tiny_model

TEXT = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. " * 40


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "home"))


def zeros_of(model) -> dict[str, torch.Tensor]:
    return {t.name: (t.weight() == 0).clone() for t in find_targets(model)}


def weights_of(model) -> dict[str, torch.Tensor]:
    return {t.name: t.weight().detach().clone() for t in find_targets(model)}


def sparse_folder(tmp_path, family: str, pattern: str | None):
    model = make_tiny_model(family)
    model.config.eos_token_id = model.config.bos_token_id = model.config.pad_token_id = 0
    sparsify(model, SparsityConfig(method="l1", sparsity=0.5, pattern=pattern))
    make_permanent(model)
    return save_model(model, make_char_tokenizer(), tmp_path / f"{family}-sparse")


def config(steps: int = 3) -> FineTuneConfig:
    return FineTuneConfig(max_steps=steps, learning_rate=5e-3, batch_size=2, block_size=16, eval_every=0,
                          eval_max_tokens=64, device="cpu")


def assert_same_zeros_and_trained(before_zeros, before_weights, model, pattern):
    after = weights_of(model)
    for name, zeros in before_zeros.items():
        assert torch.equal(after[name] == 0, zeros), name                   # exactly the same zero positions
        if pattern == "2:4":
            assert ((after[name] != 0).reshape(after[name].shape[0], -1, 4).sum(-1) <= 2).all(), name
    changed = [name for name in after if not torch.equal(after[name], before_weights[name])]
    assert len(changed) == len(after)                                    # training really moved the non-zeros


@pytest.mark.parametrize("family, pattern", [("gpt2", None), ("llama", "2:4")])
def test_zeros_survive_library_finetune_save_and_reload(family, pattern, tmp_path, tiny_text_file):
    folder = sparse_folder(tmp_path, family, pattern)
    record = json.loads((folder / RECORD_FILE).read_text())["weight_sparsity"]
    assert len(record) == len(find_targets(make_tiny_model(family)))
    assert {e["pattern"] for e in record.values()} == {pattern or "unstructured"}
    assert all(e["method"] == "l1" and e["sparsity"] == pytest.approx(0.5) for e in record.values())
    loaded = load_model(folder, device="cpu")
    assert recorded(loaded.model).keys() == record.keys()               # the loaded model knows it is sparse
    zeros, weights = zeros_of(loaded.model), weights_of(loaded.model)
    data = load_finetune_data(loaded.tokenizer, tiny_text_file, block_size=16)
    finetune(loaded.model, loaded.tokenizer, data, config())
    assert not any(is_sparse_pruned(m) for m in loaded.model.modules())   # plain weights again, still recorded
    assert_same_zeros_and_trained(zeros, weights, loaded.model, pattern)
    out = save_model(loaded.model, loaded.tokenizer, tmp_path / "tuned")
    again = load_model(out, device="cpu")
    assert json.loads((out / RECORD_FILE).read_text())["weight_sparsity"] == record
    assert_same_zeros_and_trained(zeros, weights, again.model, pattern)


@pytest.mark.parametrize("family, pattern", [("gpt2", "2:4"), ("llama", None)])
def test_zeros_survive_cli_finetune_with_checkpoints_and_distillation(family, pattern, tmp_path, tiny_text_file,
                                                                     capsys):
    folder = sparse_folder(tmp_path, family, pattern)
    before = load_model(folder, device="cpu").model
    zeros, weights = zeros_of(before), weights_of(before)
    out = tmp_path / "y"
    code = main(["finetune", "--model", str(folder), "--text", str(tiny_text_file), "--steps", "3",
                 "--checkpoint-every", "1", "--distill", "--block-size", "16", "--batch-size", "2",
                 "--eval-tokens", "64", "--lr", "5e-3", "--device", "cpu", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    tuned = load_model(out / "model", device="cpu").model
    assert_same_zeros_and_trained(zeros, weights, tuned, pattern)
    assert len(recorded(tuned)) == len(zeros)


def test_checkpoint_mid_run_holds_the_zeros(tmp_path, tiny_text_file):
    folder = sparse_folder(tmp_path, "gpt2", None)
    loaded = load_model(folder, device="cpu")
    zeros = zeros_of(loaded.model)
    data = load_finetune_data(loaded.tokenizer, tiny_text_file, block_size=16)
    result = finetune(loaded.model, loaded.tokenizer, data, FineTuneConfig(**{**config(2).to_dict(),
                                                                               "checkpoint_every": 1}),
                      checkpoint_dir=tmp_path / "ckpt")
    assert result.stopped == "completed"
    checkpoint = load_model(tmp_path / "ckpt", device="cpu").model
    assert {n: torch.equal(w == 0, zeros[n]) for n, w in weights_of(checkpoint).items()} == dict.fromkeys(zeros, True)
    assert recorded(checkpoint).keys() == recorded(loaded.model).keys()


def test_dense_model_finetune_records_no_masks(tiny_gpt2_dir, tmp_path, tiny_text_file):
    loaded = load_model(tiny_gpt2_dir, device="cpu")
    weights = weights_of(loaded.model)
    data = load_finetune_data(loaded.tokenizer, tiny_text_file, block_size=16)
    finetune(loaded.model, loaded.tokenizer, data, config(2))
    assert recorded(loaded.model) == {}
    assert all(not torch.equal(w, weights[n]) for n, w in weights_of(loaded.model).items())
    out = save_model(loaded.model, loaded.tokenizer, tmp_path / "dense-tuned")
    assert json.loads((out / RECORD_FILE).read_text())["weight_sparsity"] == {}


def test_older_folder_without_the_record_loads_dense(tmp_path):
    folder = sparse_folder(tmp_path, "gpt2", None)
    record = json.loads((folder / RECORD_FILE).read_text())
    del record["weight_sparsity"]                                   # what Sentinel wrote before this record
    (folder / RECORD_FILE).write_text(json.dumps(record))
    loaded = load_model(folder, device="cpu")
    assert recorded(loaded.model) == {}
    assert all(z.float().mean() == pytest.approx(0.5) for z in zeros_of(loaded.model).values())


def test_sparsify_on_a_sparse_model_never_revives_its_zeros(tmp_path):
    loaded = load_model(sparse_folder(tmp_path, "gpt2", None), device="cpu")
    zeros = zeros_of(loaded.model)
    sparsify(loaded.model, SparsityConfig(method="random", sparsity=0.3))
    make_permanent(loaded.model)
    assert all((w == 0)[zeros[n]].all() for n, w in weights_of(loaded.model).items())


def test_one_step_with_the_default_warm_up_changes_the_weights(tiny_gpt2_dir, tmp_path, tiny_text_file, capsys):
    before = weights_of(load_model(tiny_gpt2_dir, device="cpu").model)
    code = main(["finetune", "--model", str(tiny_gpt2_dir), "--text", str(tiny_text_file), "--steps", "1",
                 "--block-size", "16", "--batch-size", "2", "--eval-tokens", "64", "--device", "cpu",
                 "--out", str(tmp_path / "one"), "--json"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    after = weights_of(load_model(tmp_path / "one" / "model", device="cpu").model)
    assert all(not torch.equal(w, before[n]) for n, w in after.items())
    assert summary["steps"] == 1


def test_masked_heads_stay_frozen_in_a_sparse_finetune_with_weight_decay(tmp_path, tiny_text_file):
    from sentinel.models.state import model_state
    from sentinel.pruning import apply_plan

    model = make_tiny_model("gpt2")
    model.config.eos_token_id = model.config.pad_token_id = 0
    sparsify(model, SparsityConfig(sparsity=0.5))
    make_permanent(model)
    apply_plan(model, {"heads": {0: [1]}}, "mask")
    loaded = load_model(save_model(model, make_char_tokenizer(), tmp_path / "m"), device="cpu")
    state = model_state(loaded.model)
    frozen, active = state.head_weights(0, 1).q.detach().clone(), state.head_weights(0, 0).q.detach().clone()
    zeros = zeros_of(loaded.model)
    data = load_finetune_data(loaded.tokenizer, tiny_text_file, block_size=16)
    finetune(loaded.model, loaded.tokenizer, data, FineTuneConfig(**{**config(3).to_dict(), "weight_decay": 0.5}))
    assert torch.equal(state.head_weights(0, 1).q, frozen)
    assert not torch.equal(state.head_weights(0, 0).q, active)
    assert all(torch.equal(w == 0, zeros[n]) for n, w in weights_of(loaded.model).items())
