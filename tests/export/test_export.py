"""Export: every family's exportable case loads with plain transformers in a process that never imports
Sentinel (same logits in fp32 within 1e-5, same greedy generation); inexpressible shapes give one clear error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from sentinel import load_model, mask_heads, remove_heads, remove_layers, remove_neurons
from sentinel.export import ExportError, export_model, per_layer_config_support
from sentinel.models.heads import model_heads
from tests.conftest import ALL_FAMILIES, CAUSAL_FAMILIES, make_char_tokenizer, make_tiny_model, sample_ids

# Run by a fresh interpreter: only transformers and torch; importing sentinel is made impossible.
CHILD = r"""
import json, sys
sys.modules["sentinel"] = None  # any `import sentinel` now fails
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
results = {}
for case in json.load(open(sys.argv[1])):
    auto = AutoModelForMaskedLM if case["masked_lm"] else AutoModelForCausalLM
    model = auto.from_pretrained(case["dir"], dtype=torch.float32, attn_implementation="eager").eval()
    ref = load_file(case["expected"])
    with torch.no_grad():
        logits = model(input_ids=ref["ids"]).logits
    out = {"class": type(model).__name__, "max_abs_diff": float((logits - ref["logits"]).abs().max())}
    if not case["masked_lm"]:
        gen = model.generate(ref["ids"], max_new_tokens=6, do_sample=False, pad_token_id=0)
        out["same_generation"] = bool(torch.equal(gen, ref["generated"]))
    results[case["name"]] = out
results["_sentinel_imported"] = sys.modules.get("sentinel") is not None or any(
    m.startswith("sentinel.") for m in sys.modules)
print(json.dumps(results))
"""

QUERY_HEADS_TO_DROP = {"llama": [4, 5, 6, 7], "mistral": [2, 3], "qwen2": [2, 3]}  # one whole K/V group each


def _pruned(family: str) -> torch.nn.Module:
    """The family's exportable case: uniform MLP width, block 1 dropped, and (Llama family) one K/V group gone."""
    model = make_tiny_model(family)
    if family in QUERY_HEADS_TO_DROP:
        plan = {layer: QUERY_HEADS_TO_DROP[family] for layer in range(3)}
        # Mistral/Qwen2 masked rather than removed: export must remove masked heads first.
        (remove_heads if family == "llama" else mask_heads)(model, plan)
    width = model_heads(model).num_neurons                  # 64, or 128 for GPT-2 (4 x n_embd)
    remove_neurons(model, {layer: [n for n in range(width) if n not in range(1, 64, 2)] for layer in range(3)})
    remove_layers(model, [1])
    return model


@pytest.fixture(scope="module")
def child_results(tmp_path_factory):
    """Export every family's case, then check them all in one subprocess (one transformers import)."""
    root = tmp_path_factory.mktemp("exports")
    cases, expected_classes = [], {}
    ids = sample_ids(batch=2, length=10)
    for family in ALL_FAMILIES:
        model = _pruned(family)
        masked_lm = family not in CAUSAL_FAMILIES
        tokenizer = make_char_tokenizer() if family == "gpt2" else None
        result = export_model(model, tokenizer, root / family)
        assert result.verified_max_abs_diff is not None and result.blocks == 2 and result.mlp_width == 32
        with torch.no_grad():
            tensors = {"ids": ids, "logits": model(input_ids=ids).logits.contiguous()}
            if not masked_lm:
                tensors["generated"] = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        save_file(tensors, str(root / f"{family}.expected.safetensors"))
        cases.append({"name": family, "dir": str(root / family), "masked_lm": masked_lm,
                      "expected": str(root / f"{family}.expected.safetensors")})
        expected_classes[family] = type(model).__name__
    manifest = root / "cases.json"
    manifest.write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(manifest)], capture_output=True, text=True, cwd=root,
                          env={**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), expected_classes, root


def test_child_never_imported_sentinel(child_results):
    results, _, _ = child_results
    assert results["_sentinel_imported"] is False


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_plain_transformers_gives_same_logits_and_generation(child_results, family):
    results, classes, _ = child_results
    got = results[family]
    assert got["class"] == classes[family]
    assert got["max_abs_diff"] <= 1e-5
    if family in CAUSAL_FAMILIES:
        assert got["same_generation"] is True


def test_export_writes_tokenizer_and_sentinel_record(child_results):
    _, _, root = child_results
    record = json.loads((root / "llama" / "sentinel_pruning.json").read_text())
    assert record["kept"]["0"] == [0, 1, 2, 3]
    assert record["original_config"]["num_attention_heads"] == 8
    assert (root / "gpt2" / "tokenizer.json").is_file()
    assert json.loads((root / "llama" / "config.json").read_text())["num_key_value_heads"] == 1


def test_masked_heads_removed_on_a_copy_and_reported(tmp_path):
    model = make_tiny_model("qwen2")
    mask_heads(model, {layer: [0, 1] for layer in range(3)})
    result = export_model(model, None, tmp_path / "out")
    assert result.masked_removed == {"0": [0, 1], "1": [0, 1], "2": [0, 1]}
    assert "removed 6 masked heads first" in result.notes[0]
    assert result.heads == 2 and result.kv_heads == 1
    assert model.model.layers[0].self_attn.q_proj.out_features == 32  # the caller's model is untouched


def test_sentinel_load_model_keeps_original_head_indices(tmp_path):
    model = make_tiny_model("llama")
    remove_heads(model, {layer: [0, 1, 2, 3] for layer in range(3)})
    export_model(model, make_char_tokenizer(), tmp_path / "out")
    loaded = load_model(tmp_path / "out", device="cpu")
    assert loaded.layout.num_heads == 8
    assert loaded.layout.present == ((4, 5, 6, 7),) * 3
    ids = sample_ids()
    with torch.no_grad():
        assert torch.allclose(loaded.model(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "opt", "bert", "roberta", "gpt_neox"])
def test_head_removal_is_not_expressible_for_derived_head_size(family, tmp_path):
    model = make_tiny_model(family)
    remove_heads(model, {0: [1], 2: [0, 3]})
    with pytest.raises(ExportError) as err:
        export_model(model, None, tmp_path / "out")
    message = str(err.value)
    assert "blocks 0 (3 of 4), 2 (2 of 4) lost attention heads" in message
    assert "cannot express removed heads" in message and "per_layer_config" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_non_uniform_grouped_query_heads_name_the_blocks(family, tmp_path):
    model = make_tiny_model(family)
    group = model_heads(model).kv_group_size        # llama: 4 query heads per K/V head, mistral/qwen2: 2
    remove_heads(model, {0: list(range(group))})
    kept, full = len(model_heads(model).present(0)), model_heads(model).num_heads
    listed = f"0: {kept} heads/1 K/V, 1: {full} heads/2 K/V, 2: {full} heads/2 K/V"
    with pytest.raises(ExportError, match=re.escape(listed) + ".*--scope per_layer"):
        export_model(model, None, tmp_path / "out")


def test_non_uniform_mlp_width_is_refused(tmp_path):
    model = make_tiny_model("opt")
    remove_neurons(model, {1: list(range(16, 64))})
    with pytest.raises(ExportError, match=r"different MLP widths \(0: 64, 1: 16, 2: 64\)"):
        export_model(model, None, tmp_path / "out")


def test_per_layer_config_support_is_probed():
    import transformers

    support = per_layer_config_support(transformers.LlamaConfig, "llama")
    assert isinstance(support["supported"], bool) and support["detail"]


def test_a_per_layer_strategy_on_grouped_query_attention_exports(tmp_path):
    from sentinel.metrics import compute_scores
    from sentinel.pruning.strategies import get_strategy

    model = make_tiny_model("llama")
    strategy = get_strategy("magnitude", pruning_ratio=0.5, min_heads=1, seed=0, scope="per_layer",
                            whole_kv_groups=True)
    remove_heads(model, strategy.select_heads_to_prune(model, compute_scores(model, ["magnitude"], None, seed=0)))
    result = export_model(model, None, tmp_path / "out")
    assert (result.heads, result.kv_heads) == (4, 1)
    assert result.verified_max_abs_diff <= 1e-5


def test_refusals_name_blocks_by_original_layer_after_a_block_is_removed(tmp_path):
    model = make_tiny_model("opt")
    remove_layers(model, [0])
    remove_neurons(model, {2: list(range(16, 64))})     # original layer 2 is now the second block left
    with pytest.raises(ExportError, match=r"different MLP widths \(1: 64, 2: 16\)"):
        export_model(model, None, tmp_path / "out")
