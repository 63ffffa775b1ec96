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
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from sentinel.models.int8 import (  # noqa: F401  (the format lives with the loader; re-exported here)
    FORMAT, INT8_FILE, INT8_RECORD, int8_modules, is_int8_folder, linearize, quantize_structure,
)
from sentinel.sparsity.targets import SparsityError, find_targets

logger = logging.getLogger(__name__)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A CPU int8 copy of `model` (the original is untouched); masks must be made permanent first."""
    if any(k.endswith("_orig") or k.endswith("_mask") for k in model.state_dict()):
        raise SparsityError("The model still carries pruning masks; call sentinel.sparsity.make_permanent(model) first.")
    names = [t.name for t in find_targets(model)]
    from sentinel.models import pruning_record

    pruning = pruning_record(model)   # read from the fp32 structure (the adapters know Conv1D, not int8 Linear)
    copied = copy.deepcopy(model).to("cpu").float().eval()
    linearize(copied, names)
    quantized = quantize_structure(copied, names)
    quantized.sentinel_int8_modules = names
    quantized.sentinel_pruning_record = pruning
    return quantized


def save_int8(quantized: nn.Module, tokenizer: Any, path: str | os.PathLike, note: dict | None = None) -> Path:
    """Write config, tokenizer, int8 weights + scales + float parameters (safetensors) and a JSON record; atomic.

    The record keeps the fp32 model's pruning record (removed/masked units, history), so `load_model` rebuilds
    the same shapes before it sets the int8 weights; `note` is kept beside it (what made this model).
    """
    from sentinel.files import replace_folder_atomically

    def write(staging: Path) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for name, module in int8_modules(quantized).items():
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
        record = {"format": FORMAT, "modules": list(int8_modules(quantized)),
                  "how": "torch.ao dynamic quantization, per-channel symmetric int8 weights, fp32 activations; "
                         "stored as int8 weights + float scales in safetensors and rebuilt on load",
                  "conv1d_as_linear": True,
                  "pruning": getattr(quantized, "sentinel_pruning_record", None), "note": note or {}}
        (staging / INT8_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")

    return replace_folder_atomically(path, write, kind="model")


def load_int8(path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """Rebuild a model saved by save_int8: (quantized model on CPU, tokenizer or None). No remote code, no pickle.

    The same as `sentinel.models.load_model(path)` (which opens int8 folders too), for callers that want the pair.
    """
    from sentinel.models import load_model

    folder = Path(path).expanduser()
    if not is_int8_folder(folder):
        raise SparsityError(f"{folder} has no {INT8_RECORD}; it was not written by `sentinel quantize`.")
    loaded = load_model(folder, device="cpu")
    return loaded.model, loaded.tokenizer


def int8_bytes(path: str | os.PathLike) -> int:
    """Bytes of the int8 safetensors file in a folder written by save_int8."""
    return (Path(path) / INT8_FILE).stat().st_size
