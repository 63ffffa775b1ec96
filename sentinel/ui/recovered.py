"""Saved weights of a recovered pruning step: a background job fits them once, every replay (reload, undo) reads them.

A step is identified by its *fingerprint*: a hash of the base model (source, dtype, parameter count), the steps
before it (with their own fingerprints, so a chain of recovered steps is pinned) and the step itself (units,
recovery, calibration). The file stores that fingerprint in its safetensors metadata; a file whose fingerprint
differs from the one the session computes is never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as safetensors_load_model
from safetensors.torch import save_model as safetensors_save_model
from torch import nn

from sentinel.errors import SentinelError
from sentinel.pruning.recovery import bias_parts_enabled, enable_output_biases
from sentinel.store import sentinel_home

logger = logging.getLogger(__name__)

FORMAT = "sentinel-recovered-step/1"
RUNS = "prune-recovery"                 # folder under the data folder: one sub-folder per job
WEIGHTS_FILE = "recovered.safetensors"
PLAN_KEYS = ("mode", "heads", "neurons", "layers", "recovery")


class RecoveredWeightsError(SentinelError):
    """A recovered step's saved weights are missing or belong to another step."""


def job_folder(job_id: str) -> Path:
    """Where a recovery job keeps its output (under the data folder)."""
    if not job_id.isalnum():
        raise RecoveredWeightsError(f"{job_id!r} is not a job id; the page address may have been edited.")
    return sentinel_home() / RUNS / job_id


def weights_path(job_id: str) -> Path:
    return job_folder(job_id) / WEIGHTS_FILE


def base_identity(source: str, model: nn.Module) -> dict[str, Any]:
    """What the recovered weights depend on in the base model: where it came from, its dtype and size."""
    first = next(model.parameters())
    return {"source": str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source,
            "dtype": str(first.dtype), "params": sum(p.numel() for p in model.parameters())}


def _plan_part(step: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a step dict that decide its weights, with unit lists sorted (order never matters)."""
    def units(plan: Mapping[Any, Any] | None) -> dict[str, list[Any]]:
        return {str(k): sorted(v) for k, v in (plan or {}).items()}

    return {"mode": step.get("mode"), "heads": units(step.get("heads")), "neurons": units(step.get("neurons")),
            "layers": units(step.get("layers")), "recovery": step.get("recovery"),
            "fingerprint": step.get("fingerprint")}


def step_fingerprint(base: Mapping[str, Any], prior: Iterable[Mapping[str, Any]], step: Mapping[str, Any],
                     calibration: Mapping[str, Any]) -> str:
    """16 hex digits naming the weights `step` produces on `base` after `prior` steps, with this calibration."""
    this = {k: v for k, v in _plan_part(step).items() if k != "fingerprint"}
    data = {"format": FORMAT, "base": dict(base), "prior": [_plan_part(s) for s in prior], "step": this,
            "calibration": dict(calibration)}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def save_recovered(model: nn.Module, path: Path, fingerprint: str) -> Path:
    """Write the model's weights (tied ones once) with the step's fingerprint; atomic (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    metadata = {"format": FORMAT, "fingerprint": fingerprint, "bias_parts": json.dumps(bias_parts_enabled(model))}
    try:
        safetensors_save_model(model, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_fingerprint(path: Path) -> tuple[str, list[str]]:
    """The fingerprint and bias-switched parts a saved file records (RecoveredWeightsError if it is not ours)."""
    if not path.is_file():
        raise RecoveredWeightsError(f"The saved weights {path} are missing.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise RecoveredWeightsError(f"The saved weights {path} cannot be read ({err}).") from None
    if meta.get("format") != FORMAT or "fingerprint" not in meta:
        raise RecoveredWeightsError(f"{path} is not a file of Sentinel's recovered weights.")
    return meta["fingerprint"], json.loads(meta.get("bias_parts", "[]"))


def check_saved(path: Path, fingerprint: str) -> list[str]:
    """Raise RecoveredWeightsError unless `path` holds the weights of the step with this fingerprint; returns the
    parts whose biases that step's recovery switched on."""
    found, parts = read_fingerprint(path)
    if found != fingerprint:
        raise RecoveredWeightsError(f"The saved weights {path} belong to another pruning step (fingerprint {found}, "
                                    f"this step's is {fingerprint}).")
    return parts


def load_recovered(model: nn.Module, path: Path, fingerprint: str) -> None:
    """Load saved recovered weights into `model` (its units already removed) after checking the fingerprint."""
    parts = check_saved(path, fingerprint)
    for part in parts:
        if part not in bias_parts_enabled(model):
            enable_output_biases(model, part)
    device = next(model.parameters()).device
    try:
        missing, unexpected = safetensors_load_model(model, str(path), strict=False, device=str(device))
    except (SafetensorError, OSError, RuntimeError) as err:   # RuntimeError: a tensor of another shape
        raise RecoveredWeightsError(f"The saved weights {path} do not fit the pruned model ({err}).") from None
    if missing or unexpected:
        raise RecoveredWeightsError(f"The saved weights {path} do not fit the pruned model ({len(missing)} tensors "
                                    f"missing, {len(unexpected)} unexpected).")
    logger.info("Loaded recovered weights %s (step %s)", path, fingerprint)
