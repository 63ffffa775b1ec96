"""The pruning state has one owner in sentinel.models, which imports nothing from sentinel.pruning."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import pytest
import torch

from sentinel import apply_plan, load_model, mask_heads, mask_neurons, save_model, temporarily_masked
from sentinel.errors import InvalidPruningPlan, ModelLoadError
from sentinel.models import model_state
from sentinel.models.loading import RECORD_FILE
from sentinel.pruning import PruneMode, PruningPlan, active_heads, active_neurons, remove_heads
from sentinel.pruning.masks import pruning_history
from tests.conftest import make_char_tokenizer, make_tiny_model, sample_ids

MODELS_DIR = Path(__file__).resolve().parents[2] / "sentinel" / "models"


def test_models_package_imports_nothing_from_pruning():
    offenders = []
    for path in MODELS_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("sentinel.pruning")]
    assert offenders == []


def test_only_the_dashboard_helpers_import_sentinel_ui():
    """Imports point down: the library's lower layers (workflows included) never import the dashboard's
    sentinel.ui; charts and the paired speed comparison live in sentinel.charts / sentinel.evaluation."""
    library = MODELS_DIR.parent
    offenders = []
    for path in library.rglob("*.py"):
        if "ui" in path.relative_to(library).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(library)}: {n}" for n in names if n.startswith("sentinel.ui")]
    assert offenders == []


def test_nothing_outside_the_state_sets_sentinel_attributes_on_modules():
    model = make_tiny_model("gpt2")
    mask_heads(model, {0: [1]})
    remove_heads(model, {1: [2]})
    mask_neurons(model, {2: [5]})
    leftovers = [(name, attr) for name, m in model.named_modules() for attr in vars(m)
                 if attr.startswith("sentinel_") and attr != "sentinel_state"]
    assert leftovers == []
    owners = [name for name, m in model.named_modules() if "sentinel_state" in vars(m)]
    assert owners == ["transformer.h"]


def test_layout_is_derived_from_live_state_never_stale():
    model = make_tiny_model("gpt2")
    state = model_state(model)
    remove_heads(model, {0: [1]})
    assert state.layout().present[0] == (0, 2, 3)      # the same binding sees the new state
    assert model_state(model).layout().present_neurons == (128, 128, 128)


def test_apply_plan_mask_and_remove_agree_for_a_mixed_plan():
    model = make_tiny_model("llama")
    removed = copy.deepcopy(model)
    plan = {"heads": {0: [0, 1, 2, 3]}, "neurons": {1: [0, 5, 63]}, "layers": {2: ["mlp"]}}
    ids = sample_ids()
    masked_done = apply_plan(model, plan, "mask")
    removed_done = apply_plan(removed, plan, PruneMode.REMOVE)
    assert masked_done == removed_done == PruningPlan({0: [0, 1, 2, 3]}, {1: [0, 5, 63]}, {2: ["mlp"]})
    with torch.no_grad():
        assert (model(ids).logits - removed(ids).logits).abs().max() <= 1e-5
    with pytest.raises(InvalidPruningPlan, match="mode"):
        apply_plan(model, plan, "cut")


def test_temporarily_masked_restores_masks_and_history_exactly():
    model = make_tiny_model("gpt2")
    mask_heads(model, {0: [1]})
    history = copy.deepcopy(pruning_history(model))
    ids = sample_ids()
    with torch.no_grad():
        before = model(ids).logits
        with temporarily_masked(model, {"heads": {1: [0]}, "neurons": {2: [3]}, "layers": [0]}):
            assert active_heads(model)[1] == [1, 2, 3] and 3 not in active_neurons(model)[2]
            assert not torch.equal(model(ids).logits, before)
        assert torch.equal(model(ids).logits, before)
    assert pruning_history(model) == history and active_heads(model)[0] == [0, 2, 3]


def test_version_1_records_still_load(tmp_path):
    model = make_tiny_model("gpt2")
    remove_heads(model, {0: [1, 3]})
    mask_heads(model, {2: [0]})
    folder = save_model(model, make_char_tokenizer(), tmp_path / "m")
    record = json.loads((folder / RECORD_FILE).read_text())
    assert record["format"] == 2
    v1 = {k: record[k] for k in ("family", "num_layers", "num_heads", "num_kv_heads", "kept", "masked", "history",
                                 "note")}
    v1["format"] = 1
    (folder / RECORD_FILE).write_text(json.dumps(v1))
    loaded = load_model(folder, device="cpu", attn_implementation="eager")
    ids = sample_ids()
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, model(ids).logits)
    (folder / RECORD_FILE).write_text(json.dumps({**v1, "format": 7}))
    with pytest.raises(ModelLoadError, match="format"):
        load_model(folder, device="cpu")


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama", "opt", "gpt_neox"])
def test_mlp_output_path_is_the_mlp_parts_output_projection(name):
    state = model_state(make_tiny_model(name))
    assert state.adapter.mlp_output == state.spec.parts[1].bias     # the projection whose bias leaves with the part
