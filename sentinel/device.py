"""The one place that picks a device: cuda > mps > cpu unless the caller names one."""

from __future__ import annotations

import torch

from sentinel.errors import SentinelError

_KNOWN = ("auto", "cuda", "mps", "cpu")


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """Return the requested device, or the best available one for None/"auto"."""
    if isinstance(requested, torch.device):
        return requested
    name = (requested or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in _KNOWN:
        raise SentinelError(f"Unknown device {requested!r}; use one of {', '.join(_KNOWN)}.")
    if base == "cuda" and not torch.cuda.is_available():
        raise SentinelError("Device 'cuda' was requested but no CUDA GPU is available; use 'auto' or 'cpu'.")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SentinelError("Device 'mps' was requested but Apple MPS is not available; use 'auto' or 'cpu'.")
    return torch.device(name)


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """Turn 'float32'/'fp16'/'bf16'/'auto' into a torch dtype (None means: keep the checkpoint's)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    table = {
        "auto": None,
        "float32": torch.float32, "fp32": torch.float32,
        "float16": torch.float16, "fp16": torch.float16,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    }
    if name.lower() not in table:
        raise SentinelError(f"Unknown dtype {name!r}; use one of {', '.join(table)}.")
    return table[name.lower()]
