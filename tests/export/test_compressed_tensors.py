"""compressed-tensors export: a tiny Llama sparsified 2:4 and unstructured 50% is decompressed by the
compressed-tensors package (ModelCompressor), in a process that never imports Sentinel, to exactly our
weights; config.json carries the sparsity_config vLLM reads; dense and GPT-2 models are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from sentinel import remove_heads
from sentinel.cli import main
from sentinel.export import ExportError
from sentinel.exporters import export_format
from sentinel.models import save_model
from sentinel.sparsity.masks import SparsityConfig, make_permanent, sparsify
from tests.conftest import make_char_tokenizer, make_tiny_model

pytest.importorskip("compressed_tensors")

CHILD = r"""
import json, sys
sys.modules["sentinel"] = None  # any `import sentinel` now fails
import torch
from safetensors.torch import load_file
from compressed_tensors.compressors import ModelCompressor
out = {}
for folder in sys.argv[2:]:
    compressor = ModelCompressor.from_pretrained(folder)   # reads config.json's quantization_config
    state = dict(compressor.sparsity_compressor.decompress(folder))   # every tensor of the file, dense
    expected = load_file(folder + ".expected.safetensors")
    shared = set(state) & set(expected)
    out[folder] = {"equal": all(torch.equal(state[k], expected[k]) for k in shared),
                   "missing": sorted(set(expected) - set(state) - {"lm_head.weight"}),
                   "format": compressor.sparsity_config.format}
out["_sentinel_imported"] = any(m == "sentinel" or m.startswith("sentinel.") for m in sys.modules
                                if sys.modules[m] is not None)
print(json.dumps(out))
"""


def _sparse_llama(pattern: str | None) -> torch.nn.Module:
    model = make_tiny_model("llama")
    sparsify(model, SparsityConfig(method="l1", sparsity=0.5, pattern=pattern))
    make_permanent(model)
    return model


def test_two_four_and_unstructured_decompress_exactly(tmp_path):
    writer = export_format("compressed-tensors")
    folders = []
    for name, pattern, fmt, structure in (("24", "2:4", "sparse-24-bitmask", "2:4"),
                                          ("unstructured", None, "sparse-bitmask", "unstructured")):
        model = _sparse_llama(pattern)
        result = writer.export(model, make_char_tokenizer(), tmp_path / name)
        assert (result.format, result.sparsity_structure, result.verified) == (fmt, structure, True)
        assert len(result.summary().splitlines()) == 1
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(tmp_path / f"{name}.expected.safetensors"))
        config = json.loads((tmp_path / name / "config.json").read_text())["quantization_config"]
        assert config["quant_method"] == "compressed-tensors"
        sparsity = config["sparsity_config"]
        assert sparsity["format"] == fmt and sparsity["sparsity_structure"] == structure
        assert sparsity["targets"] == ["Linear"] and sparsity["ignore"] == ["lm_head"]
        assert abs(sparsity["global_sparsity"] - 0.5) < 0.01
        folders.append(str(tmp_path / name))
    proc = subprocess.run([sys.executable, "-c", CHILD, "x", *folders], capture_output=True, text=True,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got.pop("_sentinel_imported") is False
    assert got[folders[0]] == {"equal": True, "missing": [], "format": "sparse-24-bitmask"}
    assert got[folders[1]] == {"equal": True, "missing": [], "format": "sparse-bitmask"}


def test_dense_model_is_refused_before_writing(tmp_path):
    with pytest.raises(ExportError, match="no zero weights"):
        export_format("compressed-tensors").export(make_tiny_model("llama"), None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_gpt2_with_one_line(tmp_path, capsys):
    model = make_tiny_model("gpt2")
    sparsify(model, SparsityConfig(method="l1", sparsity=0.5))
    make_permanent(model)
    save_model(model, make_char_tokenizer(), tmp_path / "sparse")
    assert main(["export", "--model", str(tmp_path / "sparse"), "--device", "cpu", "--format",
                 "compressed-tensors", "--out", str(tmp_path / "ct")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Conv1D" in err
    assert not (tmp_path / "ct").exists()


def test_cli_writes_a_sparse_llama_and_refuses_non_uniform_heads(tmp_path, capsys):
    save_model(_sparse_llama("2:4"), make_char_tokenizer(), tmp_path / "sparse")
    assert main(["export", "--model", str(tmp_path / "sparse"), "--device", "cpu", "--format",
                 "compressed-tensors", "--out", str(tmp_path / "ct")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "sparse-24-bitmask" in out[0] and "bit for bit" in out[0]
    model = _sparse_llama(None)
    remove_heads(model, {0: [4, 5, 6, 7]})           # block 0 keeps 4 heads, the others 8
    with pytest.raises(ExportError, match="different head counts"):
        export_format("compressed-tensors").export(model, None, tmp_path / "uneven")
    assert not (tmp_path / "uneven").exists()
