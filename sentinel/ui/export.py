"""Export from the dashboard: the session's model under the data folder as a stock Hugging Face checkpoint
(verified by reloading it with plain transformers), a GGUF file for llama.cpp (read back) or ONNX graphs for ONNX
Runtime (run and compared), with what was checked and the lines that load it — the same writers as
`sentinel export --format`."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.export import ExportError, ExportResult, check_exportable, export_model
from sentinel.ui.library import export_folder_for
from sentinel.ui.session import WorkingModel

logger = logging.getLogger(__name__)


# what the page offers: format -> (label, what it runs in). compressed-tensors is the Weights page's (sparse copies)
DASHBOARD_FORMATS = {
    "hf": "Plain transformers (a stock Hugging Face folder)",
    "gguf": "llama.cpp, Ollama, LM Studio (GGUF)",
    "onnx": "ONNX Runtime (ONNX graphs, with the KV cache)",
}
GGUF_QUANTS = ("f16", "q8_0", "f32")


@dataclass(frozen=True)
class DashboardExport:
    """An export the page shows: where it is, one sentence on how it was checked, and the code that loads it."""

    fmt: str
    path: str
    checked: str
    load: str


def export_session(working: WorkingModel, name: str, fmt: str = "hf", quant: str = "f16") -> DashboardExport:
    """Write the session's model to $SENTINEL_HOME/exports/`name` in `fmt` (ExportError, with what would make it
    possible, when the format cannot express the pruned shapes); the session's model itself is not changed."""
    from sentinel.exporters import export_format

    if fmt not in DASHBOARD_FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}; choose one of {', '.join(DASHBOARD_FORMATS)}.")
    target = export_folder_for(name)
    note = {"source": working.base.source, "steps": working.history()}
    if fmt == "hf":
        result: Any = export_model(working.model, working.tokenizer, target, note=note, verify=True)
        export = DashboardExport(fmt, result.path, f"plain transformers reloads it with logits within "
                                 f"{result.verified_max_abs_diff:.1e} of your model's", load_lines(result))
    elif fmt == "gguf":
        result = export_format("gguf").export(working.model, working.tokenizer, target, note=note, quant=quant)
        where = f"{Path(result.path).name}/{Path(result.file).name}"
        export = DashboardExport(fmt, result.path, f"{len(result.layers)} layers as llama.cpp's {result.architecture} "
                                 f"architecture in {result.quant}, read back with a largest weight difference of "
                                 f"{result.verified_max_abs_diff:.2g} (quantisation)",
                                 f"from llama_cpp import Llama\nllm = Llama(model_path={where!r})")
    else:
        result = export_format("onnx").export(working.model, working.tokenizer, target, note=note)
        cached = (f"; cached decoding matches the full prefix within {result.verified_with_past_max_abs_diff:.1e}"
                  if result.kv_cache and result.verified_with_past_max_abs_diff is not None else "")
        from sentinel.exporters.onnx import MODEL_FILE

        where = f"{Path(result.path).name}/{MODEL_FILE}"
        export = DashboardExport(fmt, result.path, f"ONNX Runtime gives logits within "
                                 f"{result.verified_max_abs_diff:.1e} of your model's{cached}",
                                 f"import onnxruntime\nsession = onnxruntime.InferenceSession({where!r})")
    logger.info("Exported the session's model as %s to %s", fmt, export.path)
    return export


def export_blocker(working: WorkingModel, caches: MutableMapping[Any, Any] | None = None,
                   fmt: str = "hf") -> str | None:
    """Why the session's model cannot be exported as a stock checkpoint, as one plain sentence, or None when it
    can; checked on a copy before anything is written (once per model version when given the session's caches).
    GGUF and ONNX carry per-layer shapes: what they cannot express is refused when the export runs."""
    if fmt != "hf":
        return None
    key = ("export-check", id(working), working.version)
    if caches is not None and key in caches:
        return caches[key]
    try:
        check_exportable(working.model)
        reason = None
    except ExportError as err:
        reason = f"Export is off for this model: {err.reason}."
    if caches is not None:
        caches[key] = reason
    return reason


def load_lines(result: ExportResult, folder: str | None = None) -> str:
    """The two lines that load the export with plain transformers (`folder`: where the user has it; default: the
    folder's name, as the downloaded zip unpacks it)."""
    where = folder if folder is not None else Path(result.path).name
    return (f"from transformers import AutoTokenizer, {result.model_class}\n"
            f"model, tokenizer = {result.model_class}.from_pretrained({where!r}), "
            f"AutoTokenizer.from_pretrained({where!r})")
