"""Families detected as Llama-style beyond the three in conftest: each prunes exactly or refuses before any change.

mask → remove → save → reload must give the masked model's logits; a refusal must be raised before a
weight or a module changed (OLMo2's all-head q/k norm, StableLM's per-head q/k layer norms).
"""

from __future__ import annotations

import copy

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


def build(config_name: str, extra: dict, base: dict = BASE) -> torch.nn.Module:
    config = getattr(transformers, config_name)(**{**base, **extra})
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


# --- GPT-J, Phi and Falcon layouts beyond the tiny models in conftest ------------------------------------------

def _falcon(**extra) -> dict:
    return {**dict(vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_hidden_layers=2, ffn_hidden_size=96,
                   bias=True), **extra}


LAYOUTS = {
    # name: (config class, config kwargs, head plan removable exactly)
    "gptj_full_rotary": ("GPTJConfig", dict(vocab_size=VOCAB, n_embd=64, n_head=4, n_layer=2, n_inner=96,
                                            n_positions=64, rotary_dim=16), {0: [1, 3], 1: [0]}),
    "phi_gqa_qk_layernorm": ("PhiConfig", {**BASE, "qk_layernorm": True, "partial_rotary_factor": 0.4},
                             {0: [2, 3], 1: [1, 3]}),          # a whole K/V group; one query head from each group
    "falcon_grouped": ("FalconConfig", _falcon(new_decoder_architecture=True, num_attention_heads=8, num_kv_heads=2),
                       {0: [1, 2, 5, 6], 1: [4, 5, 6, 7]}),    # two from each group of four; a whole group
    "falcon_multi_query": ("FalconConfig", _falcon(multi_query=True), {0: [1, 2], 1: [0]}),
    "falcon_per_head_sequential": ("FalconConfig", _falcon(multi_query=False, parallel_attn=False),
                                   {0: [1, 3], 1: [0]}),
}


def build_random(config_name: str, extra: dict) -> torch.nn.Module:
    """`build` from `extra` alone, with biases and layer-norm parameters made random so none of them hides a
    slicing mistake."""
    model = build(config_name, extra, base={})
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name or "ln_" in name:
                param.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layouts_mask_remove_save_reload_exactly(name, tmp_path):
    from sentinel import apply_plan

    config_name, extra, heads = LAYOUTS[name]
    model = build_random(config_name, extra)
    ids = sample_ids(vocab=VOCAB, length=10)
    plan = {"heads": heads, "neurons": {0: [1, 5, 50], 1: list(range(0, 96, 3))}, "layers": {1: ["mlp"]}}
    removed = copy.deepcopy(model)
    with torch.no_grad():
        original = model(ids).logits
    apply_plan(model, plan, "mask")
    apply_plan(removed, plan, "remove")
    with torch.no_grad():
        masked, cut = model(ids).logits, removed(ids).logits
    assert (masked - original).abs().max().item() > 1e-3          # the plan really changes the model
    assert (cut - masked).abs().max().item() < 1e-5
    assert sum(p.numel() for p in removed.parameters()) < sum(p.numel() for p in model.parameters())
    kwargs = dict(max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)
    assert torch.equal(removed.generate(ids, **kwargs), model.generate(ids, **kwargs))
    folder = save_model(removed, make_char_tokenizer(), tmp_path / name)
    reloaded = load_model(folder, device="cpu", attn_implementation="eager").model
    with torch.no_grad():
        assert (reloaded(ids).logits - masked).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", ["falcon_grouped", "phi_gqa_qk_layernorm", "gptj_full_rotary"])
def test_whole_blocks_remove_save_reload_exactly(name, tmp_path):
    from sentinel import apply_plan

    config_name, extra, _ = LAYOUTS[name]
    model = build_random(config_name, extra)
    ids = sample_ids(vocab=VOCAB, length=10)
    removed = copy.deepcopy(model)
    apply_plan(model, {"layers": [0]}, "mask")
    apply_plan(removed, {"layers": [0]}, "remove")
    with torch.no_grad():
        masked = model(ids).logits
        assert (removed(ids).logits - masked).abs().max().item() < 1e-5
    folder = save_model(removed, make_char_tokenizer(), tmp_path / name)
    reloaded = load_model(folder, device="cpu", attn_implementation="eager").model
    assert len(reloaded.transformer.h if hasattr(reloaded, "transformer") else reloaded.model.layers) == 1
    with torch.no_grad():
        assert (reloaded(ids).logits - masked).abs().max().item() < 1e-5


def test_falcon_alibi_refuses_removing_some_heads_before_anything_changes():
    model = build_random("FalconConfig", _falcon(multi_query=False, parallel_attn=False, alibi=True))
    ids = sample_ids(vocab=VOCAB, length=10)
    mask_heads(model, {0: [1, 3]})
    with torch.no_grad():
        masked = model(ids).logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidPruningPlan, match="ALiBi"):
        remove_heads(model, {0: [1, 3]})
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, masked)
    mask_heads(model, {0: [0, 2]})                 # a layer losing every head is still exact
    with torch.no_grad():
        all_masked = model(ids).logits
    remove_heads(model, {0: [0, 1, 2, 3]})
    with torch.no_grad():
        assert (model(ids).logits - all_masked).abs().max().item() < 1e-5


def test_falcon_grouped_heads_must_thin_every_group_evenly():
    model = build_random("FalconConfig", LAYOUTS["falcon_grouped"][1])
    with pytest.raises(InvalidPruningPlan, match="same number of query heads"):
        remove_heads(model, {0: [1, 2]})
