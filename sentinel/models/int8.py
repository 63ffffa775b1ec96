"""The int8 model folder format: int8 weights + per-channel scales in safetensors, rebuilt into torch.ao modules.

Written by `sentinel.sparsity.quantize.save_int8` (and `sentinel quantize`), read here so `load_model` opens such
a folder like any other. GPT-2's Conv1D becomes nn.Linear (same maths, weight transposed) before
`torch.ao.quantization.quantize_dynamic` swaps the listed modules for dynamic int8 Linear modules; the stored
int8 weights, scales and zero points are then set into them and every float parameter is copied by name.
Nothing is pickled; the modules run on the CPU only.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.errors import CorruptModelError, ModelLoadError

INT8_FILE = "model.int8.safetensors"
INT8_RECORD = "sentinel_int8.json"
FORMAT = "sentinel-int8-dynamic-v1"
_QUANTIZED_SUFFIXES = ("weight_int8", "weight_scale", "weight_zero_point")


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


def quantize_structure(model: nn.Module, names: list[str]) -> nn.Module:
    """Swap the named nn.Linear modules for dynamic int8 ones (per-channel symmetric weights), in place."""
    quantize_dynamic, (qconfig, _) = _ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, qconfig_spec={name: qconfig for name in names}, dtype=torch.qint8,
                                inplace=True)


def int8_modules(model: nn.Module) -> dict[str, Any]:
    """The model's dynamic int8 Linear modules by name."""
    _, (_, DynamicLinear) = _ao()
    return {name: m for name, m in model.named_modules() if isinstance(m, DynamicLinear)}


def is_int8(model: nn.Module) -> bool:
    """Whether `model` holds dynamic int8 modules (made by quantize_int8 or loaded from an int8 folder)."""
    return bool(getattr(model, "sentinel_int8_modules", None))


def int8_weights(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """(int8 values [out, in] as torch.int8, float bias or None) of every dynamic int8 module, by module name.
    An int8 model's matrices and their biases are not nn.Parameters, so counts of parameters and zeros add these."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = {}
        for name, module in int8_modules(model).items():
            weight, bias = module._packed_params._weight_bias()
            found[name] = (weight.int_repr(), bias)
        return found


def int8_counts(model: nn.Module) -> tuple[int, int]:
    """(values, bytes) of an int8 model's int8 modules as stored: one byte per weight, a float32 scale and an int32
    zero point per output channel (INT8_FILE's layout), and the float biases; (0, 0) for other models."""
    if not is_int8(model):
        return 0, 0
    values = size = 0
    for weight, bias in int8_weights(model).values():
        values += weight.numel() + (bias.numel() if bias is not None else 0)
        size += weight.numel() + 8 * weight.shape[0] + (bias.numel() * bias.element_size() if bias is not None else 0)
    return values, size


def is_int8_folder(folder: str | Path) -> bool:
    return (Path(folder) / INT8_RECORD).is_file()


def read_int8_record(folder: Path) -> dict[str, Any]:
    """The folder's int8 record (which modules are int8), checked for the format this code reads."""
    path = folder / INT8_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"Cannot read {path}: {err}") from None
    if record.get("format") != FORMAT or not isinstance(record.get("modules"), list):
        raise ModelLoadError(f"{folder}: unknown int8 format {record.get('format')!r}; it was written by a "
                             "different Sentinel version. Quantize the fp32 model again.")
    return record


def load_int8_weights(skeleton: nn.Module, folder: Path, record: dict[str, Any]) -> nn.Module:
    """Turn an fp32 `skeleton` (already cut to the saved shapes) into the saved int8 model, on the CPU."""
    weights = folder / INT8_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{folder} has no {INT8_FILE}; the int8 folder is incomplete. Quantize again.")
    names = list(record["modules"])
    model = skeleton.to("cpu").float().eval()
    linearize(model, names)
    model = quantize_structure(model, names)
    modules = int8_modules(model)
    if sorted(modules) != sorted(names):
        raise CorruptModelError(f"{folder}: its int8 record names modules this model does not have "
                                f"({sorted(set(names) - set(modules))[:3]}).")
    with safe_open(str(weights), framework="pt") as f:
        floats = {k: f.get_tensor(k) for k in f.keys() if not k.endswith(_QUANTIZED_SUFFIXES)}
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
        raise CorruptModelError(f"{folder} does not match its config: missing {sorted(set(params) - set(floats))[:3]}, "
                                f"unexpected {sorted(set(floats) - set(params))[:3]}.")
    with torch.no_grad():
        for name, param in params.items():
            if param.shape != floats[name].shape:
                raise CorruptModelError(f"{folder}: {name} has shape {tuple(floats[name].shape)} in the file and "
                                        f"{tuple(param.shape)} in the model; the folder is damaged.")
            param.copy_(floats[name])
    model.sentinel_int8_modules = names
    return model
