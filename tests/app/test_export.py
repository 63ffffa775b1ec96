"""Export on the Prune page: an exportable plan's zip loads with plain transformers in a process that never
imports sentinel; a plan the family's config cannot express shows why and what would make it possible."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

from sentinel.ui.library import export_folder_for, zip_folder
from tests.app.conftest import assert_clean, dashboard, errors, open_app

LOAD_AND_CHECK = """
import sys
{lines}
import torch
ids = tokenizer("Return the", return_tensors="pt").input_ids
assert model(ids).logits.shape[-1] == model.config.vocab_size
assert model.config.n_inner == {width}, model.config.n_inner
assert not any(name == "sentinel" or name.startswith("sentinel.") for name in sys.modules), "sentinel was imported"
print("loaded", sum(p.numel() for p in model.parameters()))
"""


def prune_by_target(at, units: list[str], allocation: str) -> None:
    at.radio(key="prune_how").set_value("target").run()
    at.multiselect(key="budget_units").set_value(units).run()
    at.radio(key="budget_allocation").set_value(allocation).run()
    at.button(key="prune_go").click().run()
    assert_clean(at)


def test_an_exportable_plan_zips_a_checkpoint_that_plain_transformers_loads(tmp_path):
    at = open_app("prune")
    prune_by_target(at, ["neurons"], "uniform")                 # the same width in every block: exportable
    at.text_input(key="export_name").set_value("tiny-stock").run()
    at.button(key="export_go").click().run()
    assert_clean(at)
    assert not errors(at)
    code = next(c.value for c in at.code)
    assert code.startswith("from transformers import AutoTokenizer, GPT2LMHeadModel\n")
    state = dashboard(at)
    exported = next(v for k, v in state.caches.items() if isinstance(k, tuple) and k[0] == "export")
    assert Path(exported.path).parent.name == "exports"
    archive = zip_folder(Path(exported.path))                  # what the download button serves
    zipfile.ZipFile(io.BytesIO(archive)).extractall(tmp_path)
    kept = {len(layer.mlp.c_fc.bias) for layer in state.working.model.transformer.h}
    assert len(kept) == 1
    script = LOAD_AND_CHECK.format(lines=code, width=kept.pop())
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("loaded ")
    # exporting again under the same name asks first, as Save does (review #17)
    at.run()
    assert any("An export named 'tiny-stock' already exists" in w.value for w in at.warning)
    assert at.button(key="export_go").disabled
    at.checkbox(key="export_replace").check().run()
    assert not at.button(key="export_go").disabled


def test_a_plan_that_removes_heads_from_gpt2_turns_export_off_with_one_plain_sentence():
    """Issue 22 #10: Export stayed enabled, then showed a 110-word error naming a transformers exception class;
    now the check runs before anything is written and says why in one sentence."""
    at = open_app("prune")
    assert not at.button(key="export_go").disabled                 # the model as loaded exports
    prune_by_target(at, ["heads", "neurons"], "global")
    button = at.button(key="export_go")
    assert button.disabled
    reason = next(i.value for i in at.info if i.value.startswith("Export is off for this model: "))
    assert "needs all 8 attention heads in every layer" in reason and "prune only MLP neurons or whole layers" in reason
    assert button.help == reason
    assert reason.count(". ") == 0 and reason.endswith(".") and len(reason.split()) < 40
    assert "Error" not in reason and "per_layer" not in reason and "transformers 5" not in reason
    assert not errors(at) and not at.code
    assert not export_folder_for(at.text_input(key="export_name").value).exists()   # nothing written


def test_a_plan_stock_transformers_cannot_hold_exports_to_onnx_and_gguf_to_llama_cpp(tmp_path):
    """Issue 23: the dashboard's Export writes every deployment format the CLI does, checked in its runtime."""
    at = open_app("prune")
    at.radio(key="export_format").set_value("gguf").run()                 # the model as loaded: uniform GPT-2
    at.text_input(key="export_name").set_value("tiny-gguf").run()
    at.button(key="export_go").click().run()
    assert_clean(at)
    assert not errors(at)
    said = next(s.value for s in at.success if s.value.startswith("Exported as exports/tiny-gguf"))
    assert "as llama.cpp's gpt2 architecture in f16, read back" in said
    assert next(c.value for c in at.code).startswith("from llama_cpp import Llama\n")
    assert (export_folder_for("tiny-gguf") / "model.gguf").is_file()
    prune_by_target(at, ["heads", "neurons"], "global")                   # heads removed: not a stock config
    at.radio(key="export_format").set_value("onnx").run()
    at.text_input(key="export_name").set_value("tiny-onnx").run()
    assert not at.button(key="export_go").disabled                        # ONNX carries per-layer shapes
    at.button(key="export_go").click().run()
    assert_clean(at)
    assert not errors(at)
    said = next(s.value for s in at.success if s.value.startswith("Exported as exports/tiny-onnx"))
    assert "ONNX Runtime gives logits within" in said
    assert next(c.value for c in at.code).startswith("import onnxruntime\n")
    assert (export_folder_for("tiny-onnx") / "model.onnx").is_file()
