"""No unpickling, ever, and no code from a model folder (issue 9, item 2).

The malicious pickles below create a file when unpickled; every test asserts that file never appears.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sentinel.cli import main
from sentinel.errors import UnsafeModelError
from sentinel.models import load_model, save_model
from tests.conftest import make_char_tokenizer, make_tiny_model


class Payload:
    """Unpickling this calls open(path, "w"): proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _hf_folder(folder: Path, safetensors: bool) -> Path:
    model = make_tiny_model("gpt2")
    model.config.eos_token_id = model.config.bos_token_id = model.config.pad_token_id = 0
    model.save_pretrained(folder, safe_serialization=True)
    make_char_tokenizer().save_pretrained(folder)
    if not safetensors:
        (folder / "model.safetensors").unlink()
    return folder


def _plant_pickle(folder: Path, name: str, ran: Path) -> None:
    torch.save({"transformer.wte.weight": Payload(ran)}, folder / name)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.ckpt"])
def test_pickle_only_folder_is_refused_unread(tmp_path, name):
    folder = _hf_folder(tmp_path / "m", safetensors=False)
    ran = tmp_path / "PAYLOAD_RAN"
    _plant_pickle(folder, name, ran)
    with pytest.raises(UnsafeModelError, match="safe_serialization=True") as err:
        load_model(folder, device="cpu")
    assert name in str(err.value) and "never unpickles" in str(err.value)
    assert not ran.exists()


def test_pickle_only_folder_is_one_line_exit_2_in_the_cli(tmp_path, capsys):
    folder = _hf_folder(tmp_path / "m", safetensors=False)
    ran = tmp_path / "PAYLOAD_RAN"
    _plant_pickle(folder, "pytorch_model.bin", ran)
    capsys.readouterr()   # the fixture's own save_pretrained progress bar
    assert main(["generate", "--model", str(folder), "--device", "cpu", "--prompt", "a"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pickle" in err
    assert not ran.exists()


def test_safetensors_is_loaded_and_a_pickle_next_to_it_is_never_read(tmp_path):
    folder = _hf_folder(tmp_path / "m", safetensors=True)
    ran = tmp_path / "PAYLOAD_RAN"
    _plant_pickle(folder, "pytorch_model.bin", ran)
    loaded = load_model(folder, device="cpu")
    assert loaded.layout.num_layers == 3
    assert not ran.exists()


def test_sentinel_folder_whose_weights_were_swapped_for_pickle_is_refused(tmp_path):
    model = make_tiny_model("gpt2")
    model.config.eos_token_id = model.config.bos_token_id = model.config.pad_token_id = 0
    folder = save_model(model, make_char_tokenizer(), tmp_path / "m")
    (folder / "model.safetensors").unlink()
    ran = tmp_path / "PAYLOAD_RAN"
    _plant_pickle(folder, "pytorch_model.bin", ran)
    with pytest.raises(UnsafeModelError):
        load_model(folder, device="cpu")
    assert not ran.exists()


def _with_auto_map(folder: Path, model_type: str | None, ran: Path) -> None:
    (folder / "evil.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    if model_type is not None:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))


def test_auto_map_of_a_builtin_architecture_loads_the_builtin_class(tmp_path):
    folder = _hf_folder(tmp_path / "m", safetensors=True)
    ran = tmp_path / "CODE_RAN"
    _with_auto_map(folder, None, ran)
    loaded = load_model(folder, device="cpu")
    assert type(loaded.model).__module__.startswith("transformers.models.gpt2")
    assert not ran.exists()


def test_auto_map_of_an_unknown_architecture_is_refused(tmp_path):
    folder = _hf_folder(tmp_path / "m", safetensors=True)
    ran = tmp_path / "CODE_RAN"
    _with_auto_map(folder, "evil-arch", ran)
    with pytest.raises(UnsafeModelError, match="never runs code"):
        load_model(folder, device="cpu")
    assert not ran.exists()
