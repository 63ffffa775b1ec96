"""The `hf` export format: a stock transformers folder (see `sentinel.export`)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from sentinel.export import ExportResult, export_model


def export(model: nn.Module, tokenizer: PreTrainedTokenizerBase, out: str | os.PathLike,
           *, verify: bool = True, note: dict[str, Any] | None = None, **_: Any) -> ExportResult:
    return export_model(model, tokenizer, out, note=note, verify=verify)
