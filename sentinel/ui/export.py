"""Export from the dashboard: the session's model as a stock Hugging Face checkpoint under the data folder
(`sentinel.export.export_model`, verified by reloading it with plain transformers), and the lines that load it."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from sentinel.export import ExportError, ExportResult, check_exportable, export_model
from sentinel.ui.library import export_folder_for
from sentinel.ui.session import WorkingModel

logger = logging.getLogger(__name__)


def export_session(working: WorkingModel, name: str) -> ExportResult:
    """Write the session's model to $SENTINEL_HOME/exports/`name`; ExportError (with what would make it possible)
    when the pruned shapes are not one stock config. The session's model itself is not changed."""
    target = export_folder_for(name)
    result = export_model(working.model, working.tokenizer, target,
                          note={"source": working.base.source, "steps": working.history()}, verify=True)
    logger.info("Exported the session's model to %s (max logit difference %s)", result.path,
                result.verified_max_abs_diff)
    return result


def export_blocker(working: WorkingModel, caches: MutableMapping[Any, Any] | None = None) -> str | None:
    """Why the session's model cannot be exported as a stock checkpoint, as one plain sentence, or None when it
    can; checked on a copy before anything is written (once per model version when given the session's caches)."""
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
