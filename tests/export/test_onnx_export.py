"""ONNX export: non-uniformly pruned GPT-2 and GQA Llama run in ONNX Runtime, in a process that never imports
Sentinel, with the pruned torch model's logits (fp32, within 1e-4) and its greedy generation through the
KV-cache graph; the CLI writes it; refusals are one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("onnxruntime")

from sentinel import mask_heads, remove_heads, remove_layers, remove_neurons, save_model  # noqa: E402
from sentinel.cli import main  # noqa: E402
from sentinel.export import ExportError  # noqa: E402
from sentinel.exporters import export_format  # noqa: E402
from sentinel.pruning.masks import set_gate_scales  # noqa: E402
from tests.conftest import CAUSAL_FAMILIES, make_char_tokenizer, make_tiny_model, sample_ids  # noqa: E402

# Run by a fresh interpreter: numpy and onnxruntime only; importing sentinel is made impossible.
CHILD = r"""
import json, sys
sys.modules["sentinel"] = None
import numpy as np, onnxruntime
case = json.load(open(sys.argv[1]))
session = onnxruntime.InferenceSession(case["model"], providers=["CPUExecutionProvider"])
ref = np.load(case["expected"])
got = session.run(None, {"input_ids": ref["ids"], "attention_mask": ref["mask"]})[0]
keep = ref["mask"].astype(bool)
# greedy decoding with the KV-cache graph: empty past, then one token at a time, feeding present back as past
past_session = onnxruntime.InferenceSession(case["with_past"], providers=["CPUExecutionProvider"])
names = [i.name for i in past_session.get_inputs()][2:]
seq = ref["prompt"]
feed_ids = seq
past = {}
for i, name in enumerate(names):
    shape = case["past_shapes"][i // 2]
    past[name] = np.zeros((seq.shape[0], shape[0], 0, shape[1]), dtype=np.float32)
for _ in range(6):
    outs = past_session.run(None, {"input_ids": feed_ids, "attention_mask": np.ones((seq.shape[0], seq.shape[1]), dtype=np.int64), **past})
    nxt = outs[0][:, -1].argmax(-1)[:, None].astype(np.int64)
    seq = np.concatenate([seq, nxt], axis=1)
    feed_ids = nxt
    past = dict(zip(names, outs[1:]))
print(json.dumps({"same_generation": bool((seq == ref["generated"]).all()),"max_abs_diff": float(np.abs(got - ref["logits"])[keep].max()), "shape": list(got.shape),
                  "inputs": [i.name for i in session.get_inputs()],
                  "sentinel_imported": any(m == "sentinel" or m.startswith("sentinel.") for m in sys.modules
                                           if sys.modules[m] is not None)}))
"""


def _gpt2() -> torch.nn.Module:
    """Different heads per block (4, 3, 2), neurons removed unevenly, masked head, block 1 removed."""
    model = make_tiny_model("gpt2")
    remove_heads(model, {1: [0], 2: [1, 3]})
    remove_neurons(model, {0: list(range(10)), 2: list(range(0, 128, 3))})
    mask_heads(model, {0: [2]})
    remove_layers(model, [1])
    return model


def _llama() -> torch.nn.Module:
    """GQA (8 heads, 2 K/V groups): one whole group gone in block 0, 3 of 4 per group in block 1, MLPs differ."""
    model = make_tiny_model("llama")
    remove_heads(model, {0: [4, 5, 6, 7], 1: [0, 5], 2: [0, 1, 4, 5]})
    remove_neurons(model, {1: list(range(20)), 2: list(range(40))})
    return model


def _run_child(tmp_path, model: torch.nn.Module, onnx_path) -> dict:
    ids = sample_ids(batch=3, length=13, seed=5)
    mask = torch.ones_like(ids)
    mask[2, :4] = 0                                   # a left-padded row
    prompt = sample_ids(batch=2, length=5, seed=6)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        generated = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        cache = model(input_ids=prompt[:, :1], use_cache=True).past_key_values
    import numpy as np
    np.savez(tmp_path / "expected.npz", ids=ids.numpy(), mask=mask.numpy(), logits=logits.numpy(),
             prompt=prompt.numpy(), generated=generated.numpy())
    past_shapes = [[layer.keys.shape[1], layer.keys.shape[3]] for layer in cache.layers if layer.keys is not None]
    (tmp_path / "case.json").write_text(json.dumps({
        "model": str(onnx_path), "with_past": str(onnx_path.with_name("model_with_past.onnx")),
        "expected": str(tmp_path / "expected.npz"), "past_shapes": past_shapes}))
    (tmp_path / "child.py").write_text(CHILD)
    done = subprocess.run([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "case.json")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("build, shapes", [
    (_gpt2, [(3, 3, 118), (2, 2, 85)]),
    (_llama, [(4, 1, 64), (6, 2, 44), (4, 2, 24)]),
])
def test_non_uniform_model_runs_in_onnxruntime(tmp_path, build, shapes):
    model = build()
    result = export_format("onnx").export(model, make_char_tokenizer(), tmp_path / "onnx")
    assert [(b["heads"], b["kv_heads"], b["mlp_width"]) for b in result.blocks] == shapes
    assert result.verified_max_abs_diff is not None and result.verified_max_abs_diff <= 1e-4
    assert "ONNX Runtime max logit difference" in result.summary()
    folder = tmp_path / "onnx"
    assert {"model.onnx", "sentinel_pruning.json", "tokenizer.json", "sentinel_output.json"} <= {
        p.name for p in folder.iterdir()}
    record = json.loads((folder / "sentinel_pruning.json").read_text())
    assert record["note"]["export"]["format"] == "onnx" and record["layers"]["removed_blocks"] == ([1] if build is _gpt2 else [])
    if build is _gpt2:
        assert result.masked_removed == {"heads": {"0": [2]}}
        from sentinel.pruning.masks import masked_heads
        assert masked_heads(model) == {0: [2]}        # the caller's model keeps its mask
        remove_heads(model, {0: [2]})                 # the exported graph is the model with that head removed
    child = _run_child(tmp_path, model, folder / "model.onnx")
    assert child["sentinel_imported"] is False
    assert child["inputs"] == ["input_ids", "attention_mask"]
    assert child["shape"] == [3, 13, 128]
    assert child["max_abs_diff"] <= 1e-4
    assert result.kv_cache and result.verified_with_past_max_abs_diff <= 1e-4
    assert child["same_generation"] is True             # greedy decoding with the KV-cache graph = torch generate


def test_fading_heads_are_refused_before_writing(tmp_path):
    model = make_tiny_model("llama")
    set_gate_scales(model, {0: {1: 0.5}})
    with pytest.raises(ExportError, match="fading in"):
        export_format("onnx").export(model, None, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_cli_export_onnx(tmp_path, capsys):
    model = make_tiny_model("gpt2")
    remove_heads(model, {0: [1]})
    save_model(model, make_char_tokenizer(), tmp_path / "pruned")
    assert main(["export", "--model", str(tmp_path / "pruned"), "--device", "cpu", "--format", "onnx",
                 "--out", str(tmp_path / "onnx")]) == 0
    out = capsys.readouterr().out
    assert "exported gpt2 as ONNX prefill graph (3 blocks: 3h/3kv" in out and "max logit difference" in out
    assert (tmp_path / "onnx" / "model.onnx").is_file()


def test_cli_export_onnx_refuses_a_foreign_folder(tmp_path, capsys):
    save_model(make_tiny_model("gpt2"), make_char_tokenizer(), tmp_path / "pruned")
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "notes.txt").write_text("mine")
    assert main(["export", "--model", str(tmp_path / "pruned"), "--device", "cpu", "--format", "onnx",
                 "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Sentinel did not write" in err
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == ["notes.txt"]


def test_a_block_with_no_heads_left_exports(tmp_path):
    """All 8 heads (both K/V groups) of block 1 removed: the traced graph skips that attention, ORT agrees."""
    model = make_tiny_model("llama")
    remove_heads(model, {1: list(range(8))})
    result = export_format("onnx").export(model, None, tmp_path / "onnx")
    assert [b["heads"] for b in result.blocks] == [8, 0, 8]
    assert result.verified_max_abs_diff is not None and result.verified_max_abs_diff <= 1e-4


def test_external_data_above_the_threshold(tmp_path, monkeypatch):
    """Past the size threshold the weights go to model.onnx.data files; ORT still loads and agrees."""
    import sentinel.exporters.onnx as onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    result = onnx_export.export(make_tiny_model("llama"), None, tmp_path / "onnx")
    assert result.external_data and result.verified_max_abs_diff <= 1e-4
    assert result.verified_with_past_max_abs_diff <= 1e-4
    names = {p.name for p in (tmp_path / "onnx").iterdir()}
    assert {"model.onnx.data", "model_with_past.onnx.data"} <= names


@pytest.mark.parametrize("family", CAUSAL_FAMILIES)
def test_every_causal_family_exports_its_pruned_shapes_to_onnx(tmp_path, family):
    """Issue 23 item 3: heads removed from one block (a whole K/V group where heads share one), neurons from
    another, checked by ONNX Runtime against the torch model, prefill and KV cache."""
    from sentinel.models.heads import model_heads

    model = make_tiny_model(family)
    heads = model_heads(model)
    group = list(range(heads.kv_group_size))                 # K/V group 0: removable in every family
    remove_heads(model, {0: group})
    remove_neurons(model, {1: list(range(0, 16, 2))})
    result = export_format("onnx").export(model, make_char_tokenizer(), tmp_path / "onnx")
    assert result.blocks[0]["heads"] == heads.num_heads - len(group)
    assert result.verified_max_abs_diff is not None and result.verified_max_abs_diff <= 1e-4
    assert result.kv_cache and result.verified_with_past_max_abs_diff <= 1e-4
