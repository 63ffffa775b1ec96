"""save_model writes a normal Hugging Face folder + pruning record; load_model rebuilds identical models."""

from __future__ import annotations

import json

import pytest
import torch

from sentinel import active_heads, get_layout, load_model, mask_heads, present_heads, remove_heads, save_model
from sentinel.errors import ModelLoadError
from sentinel.models.loading import RECORD_FILE
from tests.conftest import ALL_FAMILIES, make_tiny_model, make_char_tokenizer, sample_ids


def _prune(model, name):
    g = get_layout(model).kv_group_size       # whole K/V groups (one head without grouped-query attention)
    remove_heads(model, {0: list(range(g)), 1: list(range(model.config.num_attention_heads))}, note={"how": "test"})
    mask_heads(model, {2: list(range(g, 2 * g))})


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_round_trip_gives_identical_logits(name, tmp_path):
    model = make_tiny_model(name)
    _prune(model, name)
    ids = sample_ids()
    with torch.no_grad():
        expected = model(ids).logits
    folder = save_model(model, make_char_tokenizer(), tmp_path / name, note={"strategy": "manual"})
    loaded = load_model(folder, device="cpu", attn_implementation="eager")  # the tiny models run eager
    with torch.no_grad():
        got = loaded.model(ids).logits
    assert torch.equal(got, expected)
    assert present_heads(loaded.model) == present_heads(model)
    assert active_heads(loaded.model) == active_heads(model)
    assert loaded.layout.present == tuple(tuple(v) for v in present_heads(model).values())


def test_saved_folder_is_safetensors_with_a_record(tmp_path):
    model = make_tiny_model("gpt2")
    remove_heads(model, {0: [1, 3]}, note={"strategy": "entropy", "ratio": 0.5})
    folder = save_model(model, make_char_tokenizer(), tmp_path / "m", note={"strategy": "entropy"})
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".pth")) for n in names)
    record = json.loads((folder / RECORD_FILE).read_text())
    assert record["kept"]["0"] == [0, 2] and record["kept"]["1"] == [0, 1, 2, 3]
    assert record["history"] == [{"op": "remove", "heads": {"0": [1, 3]}, "note": {"strategy": "entropy", "ratio": 0.5}}]
    assert record["note"] == {"strategy": "entropy"}


def test_unpruned_folder_loads_through_transformers(tmp_path):
    """A plain Hugging Face folder (no record) loads too; the config keeps the original head count."""
    model = make_tiny_model("gpt2")
    model.save_pretrained(tmp_path / "plain")
    make_char_tokenizer().save_pretrained(tmp_path / "plain")
    loaded = load_model(tmp_path / "plain", device="cpu", attn_implementation="eager")
    ids = sample_ids()
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, model(ids).logits)
    assert loaded.layout.num_heads == 4 and loaded.tokenizer.pad_token is not None


def test_save_replaces_an_existing_folder_atomically(tmp_path):
    target = tmp_path / "m"
    model = make_tiny_model("gpt2")
    save_model(model, make_char_tokenizer(), target)
    remove_heads(model, {0: [0]})
    save_model(model, make_char_tokenizer(), target)
    assert json.loads((target / RECORD_FILE).read_text())["kept"]["0"] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging or old folders left


def test_offline_hub_id_is_a_clear_error():
    with pytest.raises(ModelLoadError) as err:
        load_model("some-org/surely-not-cached-model", device="cpu")
    assert "not in the local Hugging Face cache" in str(err.value)


def test_missing_folder_and_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="No model folder"):
        load_model(tmp_path / "nope", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path / "empty", device="cpu")


def test_damaged_record_is_refused(tmp_path):
    model = make_tiny_model("gpt2")
    folder = save_model(model, make_char_tokenizer(), tmp_path / "m")
    record = json.loads((folder / RECORD_FILE).read_text())
    record["kept"]["0"] = [0, 1]  # claims heads were removed that are still in the weights
    (folder / RECORD_FILE).write_text(json.dumps(record))
    with pytest.raises(ModelLoadError, match="do not match"):
        load_model(folder, device="cpu")


def test_loading_never_trusts_remote_code(tmp_path, monkeypatch):
    import transformers

    seen = []
    original = transformers.AutoConfig.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(spy))
    folder = save_model(make_tiny_model("gpt2"), make_char_tokenizer(), tmp_path / "m")
    load_model(folder, device="cpu")
    assert seen and all(flag is False for flag in seen)
