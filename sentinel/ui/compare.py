"""The Compare page's plain parts: which models can be compared (the session's and the library's), their sizes,
and the speed table — no Streamlit here, so tests call them directly.

A session model is held in memory (base, pruned, fine-tuned, the Weights page's sparse copy); a library model is
a folder under the data folder (saved models, stock exports, fine-tune job results) loaded with `load_model`,
which reads safetensors only and never runs a model's own code.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from torch import nn

from sentinel.errors import DataError
from sentinel.evaluation.paired import (SPEED_NEW_TOKENS, SPEED_PROMPT_TOKENS, SPEED_REPEATS, InterleavedSpeed,
                                       interleaved_speed)
from sentinel.jobs import JobContext, JobManager, ProgressEvent
from sentinel.evaluation.size import weight_bytes
from sentinel.files import mark_folder
from sentinel.models.int8 import INT8_FILE, is_int8_folder
from sentinel.models.loading import WEIGHTS_FILE
from sentinel.sparsity.masks import sparsity_stats
from sentinel.sparsity.storage import COMPRESSED_FILE
from sentinel.models import LoadedModel, load_model, save_model
from sentinel.store import JobRecord, Store, new_id, sentinel_home
from sentinel.ui.finetune import CHECKPOINTS, DASHBOARD_FINETUNE
from sentinel.ui.format import human_bytes, human_count
from sentinel.ui.job_copies import input_copy_params, load_job_copy, matching_job, staged_copies
from sentinel.ui.library import exports_dir, saved_models

logger = logging.getLogger(__name__)

MAX_MODELS = 4
Kind = Literal["session", "saved", "export", "finetune"]
SESSION_LABELS = {"base": "Base model", "pruned": "Pruned", "tuned": "Pruned + fine-tuned",
                  "sparse": "Sparse copy (Weights page)"}


@dataclass(frozen=True)
class Candidate:
    """One model the page can show: `key` is stable across reruns and safe in an HTML id (letters, digits, _)."""

    key: str
    label: str
    kind: Kind
    path: str | None = None          # the folder of a library model (None: held in this session)


def session_candidates(has_tuned: bool, has_sparse: bool) -> list[Candidate]:
    """The session's models: base and pruned always, the fine-tuned model and the sparse copy when held."""
    keys = ["base", "pruned"] + (["tuned"] if has_tuned else []) + (["sparse"] if has_sparse else [])
    return [Candidate(key, SESSION_LABELS[key], "session") for key in keys]


def library_candidates(store: Store | None = None, skip: Sequence[str] = ()) -> list[Candidate]:
    """Folders under the data folder: saved models, stock exports, and each succeeded dashboard fine-tune's
    model and kept best checkpoint (when `store` is given). Folders in `skip` are left out (the session's own
    fine-tuned model is already a column)."""
    found: list[tuple[str, str, Kind, Path]] = []
    found += [("saved", f"{p.name} (saved)", "saved", p) for p in saved_models()]
    found += [("export", f"{p.name} (exported)", "export", p) for p in saved_models(exports_dir())]
    if store is not None:
        found += [(f"job_{job}", label, "finetune", p) for job, label, p in finetune_folders(store)]
    skipped = {str(Path(s).resolve()) for s in skip}
    taken: set[str] = set()
    result = []
    for prefix, label, kind, path in found:
        if str(path.resolve()) in skipped:
            continue
        key = f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', path.name)}"
        while key in taken:                    # 'a-b' and 'a_b' would share a key
            key += "_"
        taken.add(key)
        result.append(Candidate(key, label, kind, str(path)))
    return result


def finetune_folders(store: Store) -> list[tuple[str, str, Path]]:
    """(job id, label, folder) of each succeeded dashboard fine-tune's model and of its kept best checkpoint."""
    folders = []
    for job in store.list_jobs(("succeeded",)):
        if job.kind != DASHBOARD_FINETUNE:
            continue
        short = job.id[:8]
        model = (job.result or {}).get("model")
        if model and (Path(model) / "config.json").is_file():
            folders.append((job.id, f"Fine-tune {short}: final model", Path(model)))
        kept = Path(job.params.get("out", "")) / CHECKPOINTS
        if job.params.get("out") and kept.is_dir():
            for folder in sorted(kept.iterdir()):
                if folder.name.startswith("step-") and (folder / "config.json").is_file():
                    step = folder.name.removeprefix("step-")
                    folders.append((job.id, f"Fine-tune {short}: best checkpoint (step {step})", folder))
    return folders


def default_choice(candidates: Sequence[Candidate]) -> list[str]:
    """What the page shows before anyone chooses: base, pruned and the fine-tuned model when there is one."""
    return [c.key for c in candidates if c.key in ("base", "pruned", "tuned")]


def check_choice(keys: Sequence[str]) -> None:
    """At least one model and at most `MAX_MODELS`, side by side."""
    if not keys:
        raise DataError("Choose at least one model to compare.")
    if len(keys) > MAX_MODELS:
        raise DataError(f"Compare shows at most {MAX_MODELS} models side by side; {len(keys)} are chosen. "
                        "Remove one from the list.")


def folder_identity(path: str | Path) -> tuple:
    """What a saved model's cached copy depends on: its folder and the size and time of its config and weights,
    so a model saved again under the same name is loaded again."""
    folder = Path(path)
    files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    return (str(folder.resolve()), *((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()))


NOT_STORED = "not saved"          # a session model: held in memory, no file yet
NOT_STORED_HELP = ("This model is held in memory in your session only, so it has no weight file yet; save it (Prune "
                   "or Weights page) to see the size it takes on disk.")


@dataclass(frozen=True)
class SizeFigures:
    """One model's size: parameters, those not zero, dense weight bytes, the bytes of the weight file `load_model`
    reads, and the bytes of the bitmask-compressed copy saved next to it (a Weights-page save), when there is one."""

    parameters: int
    nonzero: int
    dense_bytes: int
    stored_bytes: int | None         # None: the model is held in this session only
    compressed_bytes: int | None = None   # None: no bitmask-compressed file in the folder

    def rows(self) -> dict[str, str]:
        """Label → shown value, for the page's metrics (short enough for a quarter-width column; the detail is in
        `help`)."""
        rows = {"Parameters": human_count(self.parameters),
                "Non-zero parameters": f"{human_count(self.nonzero)} ({self.nonzero / self.parameters:.0%})"
                if self.parameters else "0",
                "Weights, dense": human_bytes(self.dense_bytes),
                "Weights as stored": human_bytes(self.stored_bytes) if self.stored_bytes is not None
                else NOT_STORED}
        if self.compressed_bytes is not None:
            rows["Bitmask-compressed file"] = human_bytes(self.compressed_bytes)
        return rows

    def help(self) -> dict[str, str]:
        """Label → the metric's help text (what its short value means), for the rows that need one."""
        stored = (NOT_STORED_HELP if self.stored_bytes is None else
                  "The size of the weight file this model loads from, as saved in the data folder.")
        return {"Weights as stored": stored}


def loaded_weight_file(folder: str | Path) -> Path:
    """The weight file `load_model` reads from a saved folder: the int8 file of an int8 folder, else
    `model.safetensors`. Other safetensors next to it (the bitmask-compressed copy) are not loaded."""
    folder = Path(folder)
    return folder / (INT8_FILE if is_int8_folder(folder) else WEIGHTS_FILE)


def size_figures(model: nn.Module, folder: str | Path | None = None) -> SizeFigures:
    """Parameters and non-zero parameters (`sparsity_stats`, tied weights once), dense bytes (`weight_bytes`)
    and, for a saved model, the bytes of the weight file it loads from and, apart, of its bitmask-compressed
    copy (`COMPRESSED_FILE`) — never their sum: the folder holds the same weights twice."""
    stats = sparsity_stats(model)
    stored = compressed = None
    if folder is not None:
        weights = loaded_weight_file(folder)
        if not weights.is_file():
            raise DataError(f"{folder} has no {weights.name}, the weight file the model loads from; "
                            "save the model again.")
        stored = weights.stat().st_size
        packed = Path(folder) / COMPRESSED_FILE
        compressed = packed.stat().st_size if packed.is_file() else None
    return SizeFigures(stats.total_parameters, stats.nonzero_parameters, weight_bytes(model), stored, compressed)


def speed_table(speed: InterleavedSpeed, labels: dict[str, str]) -> pd.DataFrame:
    """One row per model: prefill and generation tokens/s (median, lowest–highest round) and each model's ratio
    to the first column, per round, in the Prune page's words ('no measurable difference' when the spread
    covers 1.0)."""
    rows = []
    first = speed.timings[0]
    for timing in speed.timings:
        row = {"Model": labels.get(timing.name, timing.name)}
        for phase, title in (("prefill", "Prefill"), ("decode", "Generation")):
            low, high = timing.spread(phase)
            row[f"{title} tokens/s"] = f"{timing.median(phase):,.0f} ({low:,.0f}–{high:,.0f})"
            row[f"{title} vs. first"] = ("reference" if timing is first
                                         else speed.ratio(timing.name, phase).describe())
        rows.append(row)
    return pd.DataFrame(rows).set_index("Model")


# -- Measure speed: a background job (up to MAX_MODELS models x SPEED_REPEATS rounds) -----------------------------

SPEED_KIND = "compare-speed"
SPEED_RUNS = "compare-speed"     # $SENTINEL_HOME/<this>/<id>/<key>: session models saved for the job, removed after


@dataclass(frozen=True)
class TimedModel:
    """One model a speed job times: a library model by its folder, or a model held in the session (saved for the
    job into its own folder), with the device and dtype the page holds it on."""

    key: str
    label: str
    folder: str | None               # a library model's folder; None: `model` is saved for the job
    device: str
    dtype: str                       # "auto" or a torch dtype name
    model: nn.Module | None = None
    tokenizer: Any = None


def speed_signature(identities: Sequence[tuple]) -> str:
    """What a speed result was measured on, stable across a reload: the page's (key, identity) per column."""
    return json.dumps([list(map(str, identity)) for identity in identities])


def start_speed_job(jobs: JobManager, models: Sequence[TimedModel], signature: str, device: str = "auto") -> str:
    """Save the session's models under the data folder (the job manager removes them when the job ends, in any
    state), point at the library's by path, and queue the timing; returns the job id."""
    check_choice([m.key for m in models])
    root = sentinel_home() / SPEED_RUNS / new_id()
    entries, copies = [], []
    with staged_copies(root):
        for m in models:
            path = m.folder
            if path is None:
                if m.model is None:
                    raise DataError(f"{m.label} is neither held in this session nor saved; choose it again.")
                path = str(save_model(m.model, m.tokenizer, root / m.key, note={"compare_speed": m.label}))
                copies.append(path)
            entries.append({"key": m.key, "label": m.label, "path": path, "copy": m.folder is None,
                            "device": m.device, "dtype": m.dtype})
        if copies:                               # the job's folder is Sentinel's too, so it goes with the copies
            mark_folder(root, kind="run")
        params = {"models": entries, "signature": signature, "repeats": SPEED_REPEATS,
                  "prompt_tokens": SPEED_PROMPT_TOKENS, "new_tokens": SPEED_NEW_TOKENS}
        return jobs.submit(SPEED_KIND, input_copy_params(params, *([root] if copies else [])), device=device)


def run_speed_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "compare-speed": load every model, time them in interleaved rounds
    (`interleaved_speed`) with progress after each run and cancel between runs."""
    loaded: dict[str, LoadedModel] = {}
    for index, entry in enumerate(params["models"]):
        ctx.report(ProgressEvent(step=0, message=f"loading {entry['label']} ({index + 1} of "
                                 f"{len(params['models'])})"), record_metrics=False)
        dtype = None if entry["dtype"] == "auto" else entry["dtype"]
        loaded[entry["key"]] = (load_job_copy(entry["path"], entry["device"], "Compare", dtype=dtype) if entry["copy"]
                                else load_model(entry["path"], device=entry["device"], dtype=dtype))
        ctx.raise_if_cancelled()
    labels = {entry["key"]: entry["label"] for entry in params["models"]}

    def on_run(done: int, total: int, key: str) -> None:
        ctx.report(ProgressEvent(step=done, total_steps=total, message=f"timed {labels[key]} ({done} of {total} "
                                 "runs, warm-ups included)"), record_metrics=False)
        ctx.raise_if_cancelled()

    speed = interleaved_speed({key: m.model for key, m in loaded.items()},
                              tokenizers={key: m.tokenizer for key, m in loaded.items()},
                              repeats=int(params["repeats"]), prompt_tokens=int(params["prompt_tokens"]),
                              new_tokens=int(params["new_tokens"]), on_run=on_run)
    return {"speed": speed.to_dict()}


def speed_job_for(store: Store, signature: str, own: str | None = None) -> JobRecord | None:
    """The speed job that timed exactly these models (`matching_job`: this session's, else the newest one)."""
    return matching_job(store, SPEED_KIND, signature, own)


def speed_of(job: JobRecord) -> InterleavedSpeed:
    """A succeeded speed job's timings."""
    return InterleavedSpeed.from_dict(job.result["speed"])
