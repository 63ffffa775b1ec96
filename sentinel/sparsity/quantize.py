"""Prune, then quantize: int8 dynamic quantization of the body's matrices on CPU with torch.ao, stored without pickle.

`quantize_int8` converts GPT-2's Conv1D to nn.Linear (same maths, transposed weight), then applies
`torch.ao.quantization.quantize_dynamic` with per-channel symmetric int8 weights to the body's matrices
only (embeddings, LM head and norms stay fp32). Zero maps to zero under symmetric quantization, so the
sparsity survives. torch's quantized modules hold packed weights that safetensors cannot store, so
`save_int8` writes the int8 weights, per-output-channel float scales and zero points plus every
float parameter to `model.int8.safetensors`; `load_int8` rebuilds the same modules from them
(`torch._make_per_channel_quantized_tensor` + `set_weight_bias`). Nothing is pickled.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.sparsity.targets import SparsityError, find_targets

logger = logging.getLogger(__name__)

INT8_FILE = "model.int8.safetensors"
INT8_RECORD = "sentinel_int8.json"
FORMAT = "sentinel-int8-dynamic-v1"


def _ao() -> tuple[Any, Any]:
    """torch.ao's dynamic quantization entry points (deprecated upstream in favour of torchao, still shipped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    return quantize_dynamic, (per_channel_dynamic_qconfig, DynamicLinear)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def linearize(model: nn.Module, names: list[str]) -> None:
    """Replace the named Conv1D modules by equivalent nn.Linear ones (weight transposed), in place."""
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, Conv1D):
            in_f, out_f = module.weight.shape
            linear = nn.Linear(in_f, out_f, bias=module.bias is not None, dtype=module.weight.dtype,
                               device=module.weight.device)
            with torch.no_grad():
                linear.weight.copy_(module.weight.t())
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            _set_module(model, name, linear)


def _quantize_structure(model: nn.Module, names: list[str]) -> nn.Module:
    quantize_dynamic, (qconfig, _) = _ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, qconfig_spec={name: qconfig for name in names}, dtype=torch.qint8,
                                inplace=True)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A CPU int8 copy of `model` (the original is untouched); masks must be made permanent first."""
    if any(k.endswith("_orig") or k.endswith("_mask") for k in model.state_dict()):
        raise SparsityError("The model still carries pruning masks; call sentinel.sparsity.make_permanent(model) first.")
    names = [t.name for t in find_targets(model)]
    copied = copy.deepcopy(model).to("cpu").float().eval()
    linearize(copied, names)
    quantized = _quantize_structure(copied, names)
    quantized.sentinel_int8_modules = names
    return quantized


def _int8_modules(model: nn.Module) -> dict[str, Any]:
    _, (_, DynamicLinear) = _ao()
    return {name: m for name, m in model.named_modules() if isinstance(m, DynamicLinear)}


def save_int8(quantized: nn.Module, tokenizer: Any, path: str | os.PathLike) -> Path:
    """Write config, tokenizer, int8 weights + scales + float parameters (safetensors) and a JSON record; atomic."""
    from sentinel.files import replace_folder_atomically

    def write(staging: Path) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for name, module in _int8_modules(quantized).items():
            weight, bias = module._packed_params._weight_bias()
            tensors[f"{name}.weight_int8"] = weight.int_repr().contiguous()
            tensors[f"{name}.weight_scale"] = weight.q_per_channel_scales().float().contiguous()
            tensors[f"{name}.weight_zero_point"] = weight.q_per_channel_zero_points().to(torch.int32).contiguous()
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().contiguous()
        for name, param in quantized.named_parameters():        # float parts; tied weights once
            tensors[name] = param.detach().contiguous()
        save_file(tensors, str(staging / INT8_FILE), metadata={"format": FORMAT})
        quantized.config.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        record = {"format": FORMAT, "modules": list(_int8_modules(quantized)),
                  "how": "torch.ao dynamic quantization, per-channel symmetric int8 weights, fp32 activations; "
                         "stored as int8 weights + float scales in safetensors and rebuilt on load",
                  "conv1d_as_linear": True}
        (staging / INT8_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")

    return replace_folder_atomically(path, write, kind="model")


def load_int8(path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """Rebuild a model saved by save_int8: (quantized model on CPU, tokenizer or None). No remote code, no pickle."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(path).expanduser()
    record_path = folder / INT8_RECORD
    if not record_path.is_file():
        raise SparsityError(f"{folder} has no {INT8_RECORD}; it was not written by `sentinel quantize`.")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if record.get("format") != FORMAT:
        raise SparsityError(f"{folder}: unknown int8 format {record.get('format')!r}.")
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config).float().eval()
    names = list(record["modules"])
    linearize(model, names)
    model = _quantize_structure(model, names)
    with safe_open(str(folder / INT8_FILE), framework="pt") as f:
        keys = set(f.keys())
        floats = {k: f.get_tensor(k) for k in keys if not any(k.endswith(s) for s in
                                                               ("weight_int8", "weight_scale", "weight_zero_point"))}
        modules = _int8_modules(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in names:
                qweight = torch._make_per_channel_quantized_tensor(
                    f.get_tensor(f"{name}.weight_int8"), f.get_tensor(f"{name}.weight_scale").double(),
                    f.get_tensor(f"{name}.weight_zero_point").long(), 0)
                modules[name].set_weight_bias(qweight, floats.pop(f"{name}.bias", None))
    # quantized modules refuse load_state_dict without their packed keys, so float parameters are copied by name
    params = dict(model.named_parameters())
    if set(params) != set(floats):
        raise SparsityError(f"{folder} does not match its config: missing {sorted(set(params) - set(floats))[:3]}, "
                            f"unexpected {sorted(set(floats) - set(params))[:3]}.")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(floats[name])
    model.sentinel_int8_modules = names
    tokenizer = AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer_config.json").is_file() else None
    return model, tokenizer


def int8_bytes(path: str | os.PathLike) -> int:
    """Bytes of the int8 safetensors file in a folder written by save_int8."""
    return (Path(path) / INT8_FILE).stat().st_size
