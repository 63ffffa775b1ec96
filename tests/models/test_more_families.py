"""Families detected as Llama-style beyond the three in conftest: each prunes exactly or refuses before any change.

mask → remove → save → reload must give the masked model's logits; a refusal must be raised before a
weight or a module changed (OLMo2's all-head q/k norm, StableLM's per-head q/k layer norms).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from sentinel import load_model, mask_heads, remove_heads, save_model
from sentinel.errors import InvalidPruningPlan
from tests.conftest import make_char_tokenizer, sample_ids

VOCAB = 96
BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)

EXACT = {
    "phi3": ("Phi3Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "gemma": ("GemmaConfig", {"head_dim": 16}),
    "gemma2": ("Gemma2Config", {"head_dim": 16}),
    "gemma3_text": ("Gemma3TextConfig", {"head_dim": 16}),
    "olmo": ("OlmoConfig", {}),
    "granite": ("GraniteConfig", {}),
    "stablelm": ("StableLmConfig", {}),
}
REFUSED = {
    "olmo2": ("Olmo2Config", {}, "normalises all heads together"),
    "stablelm_qk_norm": ("StableLmConfig", {"qk_layernorm": True}, "qk_layernorm"),
}


def build(config_name: str, extra: dict) -> torch.nn.Module:
    config = getattr(transformers, config_name)(**{**BASE, **extra})
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("name", sorted(EXACT))
def test_mask_remove_save_reload_is_exact(name, tmp_path):
    model = build(*EXACT[name])
    ids = sample_ids(vocab=VOCAB, length=10)
    plan = {0: [2, 3], 1: [0, 1]}            # whole K/V groups (2 query heads per K/V head)
    mask_heads(model, plan)
    with torch.no_grad():
        masked = model(ids).logits
    remove_heads(model, plan)
    with torch.no_grad():
        removed = model(ids).logits
    assert (removed - masked).abs().max().item() < 1e-5
    folder = save_model(model, make_char_tokenizer(), tmp_path / name)
    reloaded = load_model(folder, device="cpu", attn_implementation="eager").model
    with torch.no_grad():
        again = reloaded(ids).logits
    assert (again - masked).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_inexact_head_removal_is_refused_before_anything_changes(name):
    config_name, extra, reason = REFUSED[name]
    model = build(config_name, extra)
    ids = sample_ids(vocab=VOCAB, length=10)
    mask_heads(model, {0: [2, 3]})           # masking stays available and exact
    with torch.no_grad():
        masked = model(ids).logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidPruningPlan, match=reason):
        remove_heads(model, {0: [2, 3]})
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, masked)


def test_removing_every_head_of_an_olmo2_layer_is_exact():
    model = build("Olmo2Config", {})
    ids = sample_ids(vocab=VOCAB, length=10)
    mask_heads(model, {0: [0, 1, 2, 3]})
    with torch.no_grad():
        masked = model(ids).logits
    remove_heads(model, {0: [0, 1, 2, 3]})
    with torch.no_grad():
        assert (model(ids).logits - masked).abs().max().item() < 1e-5


def test_reloading_a_removed_mlp_part_logs_no_per_neuron_warnings(tmp_path, caplog):
    from sentinel.pruning.units import remove_layers
    from tests.conftest import make_tiny_model

    model = make_tiny_model("gpt2")
    remove_layers(model, {1: ["mlp"]})
    folder = save_model(model, make_char_tokenizer(), tmp_path / "m")
    with caplog.at_level("WARNING", logger="sentinel"):
        load_model(folder, device="cpu")
    assert not [r for r in caplog.records if "already removed" in r.getMessage()]


def test_a_plan_naming_removed_units_warns_once_per_layer(caplog):
    from sentinel.pruning.units import remove_neurons
    from tests.conftest import make_tiny_model

    model = make_tiny_model("gpt2")
    remove_neurons(model, {0: list(range(20))})
    with caplog.at_level("WARNING", logger="sentinel"):
        remove_neurons(model, {0: list(range(30))})
    warnings = [r.getMessage() for r in caplog.records if "already removed" in r.getMessage()]
    assert len(warnings) == 1 and "20 neuron(s)" in warnings[0]


@pytest.mark.parametrize("name", ["phi3", "stablelm"])
def test_non_uniform_heads_and_neurons_are_exact(name, tmp_path):
    from sentinel.pruning.units import mask_neurons, remove_neurons

    model = build(*EXACT[name])
    ids = sample_ids(vocab=VOCAB, length=10)
    heads, neurons = {0: [2, 3]}, {0: [1, 5, 50], 1: list(range(0, 96, 3))}
    mask_heads(model, heads)
    mask_neurons(model, neurons)
    with torch.no_grad():
        masked = model(ids).logits
    remove_heads(model, heads)
    remove_neurons(model, neurons)
    with torch.no_grad():
        assert (model(ids).logits - masked).abs().max().item() < 1e-5
    folder = save_model(model, make_char_tokenizer(), tmp_path / name)
    reloaded = load_model(folder, device="cpu", attn_implementation="eager").model
    with torch.no_grad():
        assert (reloaded(ids).logits - masked).abs().max().item() < 1e-5
