"""GGUF export: a tiny non-uniform Llama (GQA, per-layer heads and K/V groups, neurons cut, an MLP part, an
attention part and a block removed) runs in llama.cpp (llama-cpp-python, in a process that never imports
Sentinel) with the torch model's logits and greedy tokens; refusals are one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from sentinel import mask_heads, remove_heads, remove_layers, remove_neurons
from sentinel.export import ExportError
from sentinel.exporters import export_format
from tests.conftest import make_tiny_model, make_tiny_tokenizer

gguf = pytest.importorskip("gguf")

PROMPT = "Return the value of the attribute named"
STEPS = 20

# Run by a fresh interpreter: llama-cpp-python and numpy only; importing sentinel is made impossible.
CHILD = r"""
import json, sys
sys.modules["sentinel"] = None
import numpy as np
import llama_cpp
case = json.load(open(sys.argv[1]))
llm = llama_cpp.Llama(model_path=case["file"], n_ctx=64, logits_all=True, verbose=False, n_threads=1,
                      type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
ids = case["ids"]
tokenized = llm.tokenize(case["prompt"].encode(), add_bos=False, special=False) if case.get("prompt") else None
llm.eval(ids)
logits = np.array(llm.scores[:len(ids)])
gen = []
for _ in range(case["steps"]):
    gen.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
    llm.eval([gen[-1]])
print(json.dumps({"logits": logits.tolist(), "generated": gen, "tokenized": tokenized,
                  "sentinel_imported": any(m == "sentinel" or m.startswith("sentinel.") for m in sys.modules
                                           if sys.modules[m] is not None)}))
"""


def _llama(layers: int = 5, seed: int = 0) -> tuple[torch.nn.Module, object]:
    tokenizer = make_tiny_tokenizer()
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_attention_heads=8,
                                      num_key_value_heads=4, head_dim=8, intermediate_size=64,
                                      num_hidden_layers=layers, max_position_embeddings=64)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():              # larger weights: logits that tell a wrong export apart
        for param in model.parameters():
            param.mul_(3)
    return model, tokenizer


def _non_uniform() -> tuple[torch.nn.Module, object]:
    """Per-layer heads 6/4/6(2 masked)/-/8, K/V groups 3/2/3/0/4, neurons cut, layer 1 MLP, layer 3 attention
    and block 4 removed."""
    model, tokenizer = _llama()
    remove_heads(model, {0: [0, 1], 1: [2, 3, 4, 5]})
    mask_heads(model, {2: [0, 1]})
    remove_neurons(model, {0: list(range(10)), 2: list(range(30))})
    remove_layers(model, [1], part="mlp")
    remove_layers(model, [3], part="attention")
    remove_layers(model, [4])
    return model, tokenizer


def _reference(model, tokenizer) -> dict:
    ids = tokenizer(PROMPT).input_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        gen = model.generate(torch.tensor([ids]), max_new_tokens=STEPS, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)[0, len(ids):]
    return {"ids": ids, "logits": logits.numpy(), "generated": gen.tolist()}


def _run_llama_cpp(file, ids, tmp_path, prompt: str = PROMPT) -> dict:
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"file": str(file), "ids": ids, "steps": STEPS, "prompt": prompt}))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(case)], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _export(model, tokenizer, out, quant):
    return export_format("gguf").export(model, tokenizer, out, quant=quant)


@pytest.mark.parametrize("quant", ["f32", "f16"])
def test_non_uniform_llama_runs_in_llama_cpp(tmp_path, quant):
    pytest.importorskip("llama_cpp")
    model, tokenizer = _non_uniform()
    ref = _reference(model, tokenizer)
    result = _export(model, tokenizer, tmp_path / "out", quant)
    assert [(x.layer, x.heads, x.kv_heads, x.mlp_width) for x in result.layers] == [
        (0, 6, 3, 54), (1, 4, 2, 32), (2, 6, 3, 34), (3, 0, 0, 64)]
    assert result.layers[1].stand_in == "zero MLP" and result.skipped_layers == [4]
    got = _run_llama_cpp(result.file, ref["ids"], tmp_path)
    assert not got["sentinel_imported"]
    assert got["tokenized"] == ref["ids"]          # llama.cpp splits the text as the HF tokenizer does
    diff = float(np.abs(np.array(got["logits"]) - ref["logits"]).max())
    assert diff <= 1e-2 * float(np.abs(ref["logits"]).max()), diff
    assert got["generated"] == ref["generated"]


def test_q8_0_loads_and_generates(tmp_path):
    pytest.importorskip("llama_cpp")
    model, tokenizer = _non_uniform()
    ref = _reference(model, tokenizer)
    result = _export(model, tokenizer, tmp_path / "out", "q8_0")
    reader = gguf.GGUFReader(result.file)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.ffn_down.weight"] == "F16"   # 54 wide rows
    got = _run_llama_cpp(result.file, ref["ids"], tmp_path)
    assert len(got["generated"]) == STEPS
    diff = float(np.abs(np.array(got["logits"]) - ref["logits"]).max())
    assert diff <= 0.1 * float(np.abs(ref["logits"]).max()), diff


def test_attention_without_mlp_keeps_its_attention(tmp_path):
    """llama.cpp's deci skips the residual update of a layer with n_ff = 0; the zero MLP stand-in keeps it."""
    pytest.importorskip("llama_cpp")
    model, tokenizer = _llama(layers=2, seed=3)
    remove_layers(model, [0, 1], part="mlp")
    ref = _reference(model, tokenizer)
    result = _export(model, tokenizer, tmp_path / "out", "f32")
    assert [x.stand_in for x in result.layers] == ["zero MLP", "zero MLP"]
    got = _run_llama_cpp(result.file, ref["ids"], tmp_path)
    diff = float(np.abs(np.array(got["logits"]) - ref["logits"]).max())
    assert diff <= 1e-3 * float(np.abs(ref["logits"]).max()), diff
    assert got["generated"] == ref["generated"]


def test_first_layer_without_attention(tmp_path):
    """llama.cpp takes the head size from layer 0; a headless first layer gets one zero head."""
    pytest.importorskip("llama_cpp")
    model, tokenizer = _llama(layers=2, seed=4)
    remove_layers(model, [0], part="attention")
    ref = _reference(model, tokenizer)
    result = _export(model, tokenizer, tmp_path / "out", "f32")
    assert result.layers[0].stand_in == "zero head" and result.layers[0].heads == 1
    got = _run_llama_cpp(result.file, ref["ids"], tmp_path)
    diff = float(np.abs(np.array(got["logits"]) - ref["logits"]).max())
    assert diff <= 1e-3 * float(np.abs(ref["logits"]).max()), diff


def test_file_keys_arrays_and_values_round_trip(tmp_path):
    """Without llama.cpp: the per-layer arrays, tokenizer keys, shapes and the permuted Q rows read back."""
    model, tokenizer = _non_uniform()
    q_rows = model.model.layers[0].self_attn.q_proj.weight.detach().numpy().copy()
    result = _export(model, tokenizer, tmp_path / "out", "f32")
    assert result.verified and result.verified_max_abs_diff == 0.0
    reader = gguf.GGUFReader(result.file)
    field = lambda key: reader.get_field(key).contents()  # noqa: E731
    assert field("general.architecture") == "deci"
    assert field("deci.attention.head_count") == [6, 4, 6, 0]
    assert field("deci.attention.head_count_kv") == [3, 2, 3, 0]
    assert field("deci.feed_forward_length") == [54, 32, 34, 64]
    assert field("deci.block_count") == 4 and field("deci.attention.key_length") == 8
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert len(field("tokenizer.ggml.tokens")) == len(tokenizer)
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    tensors = {t.name: t for t in reader.tensors}
    assert "blk.3.attn_q.weight" not in tensors and "blk.4.attn_norm.weight" not in tensors
    q = np.asarray(tensors["blk.0.attn_q.weight"].data).reshape(48, 32)
    # llama.cpp's interleaved rotary layout: row 2j of a head is HF row j, row 2j+1 is HF row j + head_dim/2
    assert np.array_equal(q[0], q_rows[0]) and np.array_equal(q[1], q_rows[4]) and np.array_equal(q[2], q_rows[1])


def test_bundled_gpt2_uniform_prune_runs_in_llama_cpp(tmp_path):
    """GPT-2 goes out as llama.cpp's gpt2 architecture: a third of the neurons in every block and block 1 removed."""
    pytest.importorskip("llama_cpp")
    from sentinel import load_model

    loaded = load_model("assets/models/stories-gpt2")
    model, tokenizer = loaded.model, loaded.tokenizer
    width = model.config.n_inner or 4 * model.config.n_embd
    remove_neurons(model, {layer: list(range(0, width, 3)) for layer in range(model.config.n_layer)})
    remove_layers(model, [1])
    prompt = "Once upon a time there was a little"
    ids = tokenizer(prompt).input_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].numpy()
        gen = model.generate(torch.tensor([ids]), max_new_tokens=STEPS, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
    result = _export(model, tokenizer, tmp_path / "out", "f32")
    assert result.architecture == "gpt2" and result.skipped_layers == [1]
    got = _run_llama_cpp(result.file, ids, tmp_path, prompt)
    assert got["tokenized"] == ids
    assert float(np.abs(np.array(got["logits"]) - logits).max()) <= 1e-2 * float(np.abs(logits).max())
    assert got["generated"] == gen


def test_refusals(tmp_path):
    gpt2 = make_tiny_model("gpt2")
    remove_heads(gpt2, {0: [1]})
    with pytest.raises(ExportError, match="lost attention heads"):
        _export(gpt2, make_tiny_tokenizer(), tmp_path / "a", "f16")
    qwen = make_tiny_model("qwen2")
    remove_heads(qwen, {0: [2, 3]})
    with pytest.raises(ExportError, match="query bias"):
        _export(qwen, make_tiny_tokenizer(), tmp_path / "b", "f16")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_refusal_is_one_line(tmp_path):
    from sentinel.models import save_model

    folder = save_model(make_tiny_model("opt"), make_tiny_tokenizer(), tmp_path / "opt")
    proc = subprocess.run([sys.executable, "-m", "sentinel", "export", "--model", str(folder), "--format", "gguf",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Llama family" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_writes_gguf_and_refuses_quant_for_hf(tmp_path):
    from sentinel.models import save_model

    model, tokenizer = _non_uniform()
    folder = save_model(model, tokenizer, tmp_path / "pruned")
    cmd = [sys.executable, "-m", "sentinel", "export", "--model", str(folder), "--out"]
    proc = subprocess.run(cmd + [str(tmp_path / "g"), "--format", "gguf", "--quant", "q8_0", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["quant"] == "q8_0" and result["verified"] and (tmp_path / "g" / "model.gguf").is_file()
    assert [x["heads"] for x in result["layers"]] == [6, 4, 6, 0]
    proc = subprocess.run(cmd + [str(tmp_path / "h"), "--quant", "q8_0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--format gguf only" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_qwen2_biases_and_tied_embeddings_run_in_llama_cpp(tmp_path):
    """Qwen2 keeps its Q/K/V biases (permuted like the rows) and ties the LM head to the embeddings."""
    pytest.importorskip("llama_cpp")
    tokenizer = make_tiny_tokenizer()
    config = transformers.Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, num_hidden_layers=3,
                                      max_position_embeddings=64, tie_word_embeddings=True)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0, 0.5) if name.endswith("bias") else param.mul_(3)
    remove_neurons(model, {0: list(range(20)), 1: list(range(5))})
    remove_layers(model, [2], part="attention")
    ref = _reference(model, tokenizer)
    result = _export(model, tokenizer, tmp_path / "out", "f32")
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(result.file).tensors}
    got = _run_llama_cpp(result.file, ref["ids"], tmp_path)
    diff = float(np.abs(np.array(got["logits"]) - ref["logits"]).max())
    assert diff <= 1e-3 * float(np.abs(ref["logits"]).max()), diff
    assert got["generated"] == ref["generated"]
