"""A sparse model that also has masked heads / neurons: fine-tuning holds both its zeros and the masked units' weights."""

from __future__ import annotations

import pytest
import torch

from sentinel.models import load_model, save_model
from sentinel.models.state import model_state
from sentinel.pruning.masks import mask_heads
from sentinel.pruning.units import mask_neurons
from sentinel.sparsity import SparsityConfig, make_permanent, sparsify
from sentinel.training.config import FineTuneConfig
from sentinel.training.finetune import finetune, load_finetune_data
from tests.conftest import make_char_tokenizer, make_tiny_model


@pytest.mark.parametrize("family, kind", [("gpt2", "head"), ("llama", "neuron")])
def test_masked_units_keep_their_weights_while_a_sparse_model_trains(family, kind, tmp_path, tiny_text_file):
    model = make_tiny_model(family)
    model.config.eos_token_id = model.config.bos_token_id = model.config.pad_token_id = 0
    (mask_heads if kind == "head" else mask_neurons)(model, {0: [1]})
    sparsify(model, SparsityConfig(method="l1", sparsity=0.5))
    make_permanent(model)
    loaded = load_model(save_model(model, make_char_tokenizer(), tmp_path / "m"), device="cpu")
    state = model_state(loaded.model)
    before = {k: v.detach().clone() for k, v in state.views(0, kind, 1).items() if v is not None}
    active = {k: v.detach().clone() for k, v in state.views(0, kind, 0).items() if v is not None}
    data = load_finetune_data(loaded.tokenizer, tiny_text_file, block_size=16)
    finetune(loaded.model, loaded.tokenizer, data, FineTuneConfig(
        max_steps=3, learning_rate=5e-3, weight_decay=0.5, batch_size=2, block_size=16, eval_every=0,
        eval_max_tokens=64, device="cpu"))
    after = state.views(0, kind, 1)
    assert {k: torch.equal(after[k], v) for k, v in before.items()} == dict.fromkeys(before, True)
    trained = state.views(0, kind, 0)
    assert all(not torch.equal(trained[k], v) for k, v in active.items())      # the active unit did train
