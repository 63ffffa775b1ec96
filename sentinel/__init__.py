"""Sentinel: prune the attention heads of transformer language models, by mask or by removal.

The public names below are imported on first use (PEP 562), so `import sentinel.cli` and `sentinel --help`
do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "HeadLayout": "sentinel.models", "LoadedModel": "sentinel.models", "get_layout": "sentinel.models",
    "load_model": "sentinel.models", "pruning_record": "sentinel.models", "save_model": "sentinel.models",
    "active_heads": "sentinel.pruning", "mask_heads": "sentinel.pruning", "present_heads": "sentinel.pruning",
    "remove_heads": "sentinel.pruning", "unmask_heads": "sentinel.pruning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sentinel' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
