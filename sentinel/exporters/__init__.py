"""Export writers, one module per format, chosen by name.

Each format module exposes `export(model, tokenizer, out, **options) -> result` whose result has
`to_dict()` and `summary()` (one line for the CLI). What a format cannot express is refused with an
`ExportError` (from `sentinel.export`) before anything is written.

- `hf`: a stock Hugging Face folder (`sentinel.export.export_model`), uniform shapes only.
- `gguf`: one model.gguf for llama.cpp (`sentinel.exporters.gguf`), Llama family, per-layer shapes too.
- `compressed-tensors`: weight-sparse models bitmask-compressed as llm-compressor writes them (vLLM's format).
- `onnx`: prefill and KV-cache ONNX graphs traced from the pruned modules (any per-block shapes), checked in ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

# format name -> module under sentinel.exporters that writes it
FORMATS: dict[str, str] = {
    "hf": "hf",
    "gguf": "gguf",
    "compressed-tensors": "compressed_tensors",
    "onnx": "onnx",
}


def export_format(name: str) -> Any:
    """The writer module for format `name`; a clear error for an unknown one."""
    from sentinel.errors import SentinelError

    if name not in FORMATS:
        raise SentinelError(f"Unknown export format {name!r}; choose one of {', '.join(FORMATS)}.")
    return importlib.import_module(f"sentinel.exporters.{FORMATS[name]}")
