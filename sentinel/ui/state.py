"""Each dashboard session's state as plain data: the chosen model, its working copy, selection, caches.

No Streamlit here (the library never imports it): the Streamlit glue that keeps a `DashboardState` in
`st.session_state` and caches the shared model lives next to the pages, in app_support/state.py.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sentinel.errors import DataError, SentinelError
from sentinel.models import BUNDLED_MODEL_DIR
from sentinel.ui.choices import (MAP_METRIC, MAP_SAMPLES, MAP_SEQ_LEN, STATE_KEY, URL_KEY,  # noqa: F401
                                 ModelChoice, SampleText)
from sentinel.ui.kept_sessions import PendingLoad
from sentinel.ui.maps_cache import maps_fingerprint
from sentinel.ui.pruning import PruneSettings
from sentinel.ui.selection import HeadSelection, NeuronRule, UnitSelection
from sentinel.ui.session import PruneStep, WorkingModel

logger = logging.getLogger(__name__)

THREADS_ENV = "SENTINEL_TORCH_THREADS"


@dataclass
class TunedModel:
    """A fine-tuned copy of the session's model: the job that produced it and the pruning it started from."""

    model: nn.Module
    job_id: str
    checkpoint: str
    pruned_steps: list[dict[str, Any]]


@dataclass
class DashboardState:
    """Everything one browser session has chosen, computed and pruned."""

    choice: ModelChoice | None = None
    working: WorkingModel | None = None
    selection: HeadSelection = field(default_factory=HeadSelection)
    units: UnitSelection = field(default_factory=UnitSelection)   # selected layers and neurons (Maps)
    caches: dict[str, Any] = field(default_factory=dict)     # results keyed by what they were computed on
    text: SampleText = field(default_factory=SampleText)
    map_samples: int = MAP_SAMPLES                            # blocks of sample text the maps run on
    map_seq_len: int = MAP_SEQ_LEN                            # tokens per block
    map_metric: str = MAP_METRIC                              # the metric last shown on Head maps
    tuned: TunedModel | None = None
    job_id: str | None = None
    notices: list[str] = field(default_factory=list)          # one-shot messages for the next run
    prune_selection_next: bool = False                        # open Prune in "By my selection" mode once
    compare_job_id: str | None = None                         # the session's latest strategy comparison
    recover_job_id: str | None = None                         # a target prune's recovery running in the background
    sensitivity_job_id: str | None = None                     # the session's latest layer-sensitivity scan (Weights)
    gradual_job_id: str | None = None                         # the session's latest gradual sparsify (Weights)
    prune_settings: PruneSettings = field(default_factory=PruneSettings)   # Prune's settings, for previews
    linked_job: str | None = None      # a fine-tune job whose address opened this session: its model opens once
    pending_load: PendingLoad | None = None            # a model to load once the user confirms discarding the work
    selection_note: tuple[int, int, str] | None = None   # (working id, version, what the last step took from it)
    inside_head: tuple[int, int] = (0, 0)             # the head 'Look inside a head' shows (selector and charts)
    inside_follows: tuple[int, int] | None = None     # the selected head it last followed


    def forget_model(self) -> None:
        """Drop everything computed on the previous model (a new model was loaded)."""
        self.working = None
        self.selection = HeadSelection()
        self.units = UnitSelection()
        self.selection_note = None
        self.pending_load = None
        self.caches.clear()
        self.tuned = None
        self.job_id = None              # every job below ran on the previous model: showing one with the new
        self.compare_job_id = None      # model would mislead (a fine-tune page reopening it would switch models)
        self.linked_job = None
        self.recover_job_id = None      # its result was fitted on the previous model
        self.sensitivity_job_id = None      # both were run on the previous model
        self.gradual_job_id = None
        self.inside_head, self.inside_follows = (0, 0), None     # the new model may have other heads


def bundled_model_available() -> bool:
    return (BUNDLED_MODEL_DIR / "config.json").is_file()


@dataclass
class Failure:
    """Truthy once `report_errors` caught something."""

    message: str = ""

    def __bool__(self) -> bool:
        return bool(self.message)


def maps_key(state: DashboardState, working: WorkingModel) -> tuple:
    """What a head map depends on: the model copy, its version, the text and the sampling settings."""
    return (id(working), working.version, state.text.digest, state.map_samples, state.map_seq_len)


def disk_maps_key(state: DashboardState, working: WorkingModel) -> str | None:
    """The on-disk key of the head maps of the session's model as it is now (None: a hub model, not cached)."""
    choice = state.choice or ModelChoice()
    return maps_fingerprint(working.base.source, choice.device, choice.dtype, working.history(), state.text.digest,
                            state.map_samples, state.map_seq_len)


@functools.cache
def configure_torch_threads() -> int:
    """Set torch's CPU threads once per process: $SENTINEL_TORCH_THREADS, else half the cores (at least one).

    The app shares the CPU with the browser, the server, background fine-tunes and other users; more torch
    threads than free cores make every page slower (measured in BENCHMARKS.md), so it takes half by default.
    """
    wanted = os.environ.get(THREADS_ENV)
    if wanted is not None:
        if not wanted.isdigit() or int(wanted) < 1:
            raise SentinelError(f"{THREADS_ENV}={wanted!r} is not a whole number of threads (1 or more).")
        threads = int(wanted)
    else:
        threads = max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    logger.info("torch uses %d CPU threads in this app process", threads)
    return threads


@dataclass(frozen=True)
class SessionSnapshot:
    """What a URL carries so F5 or a bookmark restores a session: the model choice, the pruning steps
    (replayed on a fresh copy), the selected heads, layers and neurons and which fine-tuned model was adopted."""

    choice: ModelChoice
    steps: tuple[dict[str, Any], ...] = ()
    selection: tuple[tuple[int, int], ...] = ()
    adopted: str | None = None        # "<job id>/final" or "<job id>/step-N": the adopted fine-tuned model
    finetune_job: str | None = None   # the session's latest fine-tune job
    compare_job: str | None = None    # the session's latest strategy comparison
    recover_job: str | None = None    # a target prune's recovery job not yet adopted
    sensitivity_job: str | None = None  # the session's latest layer-sensitivity scan (Weights page)
    gradual_job: str | None = None      # the session's latest gradual sparsify (Weights page)
    units: UnitSelection = field(default_factory=UnitSelection)   # selected layers and neurons (no chart state)

    def encode(self) -> str:
        """Compact URL-safe text (base64 of JSON, no padding)."""
        data = {"m": self.choice.source, "d": self.choice.device, "t": self.choice.dtype,
                "p": [_encode_step(s) for s in self.steps],
                "h": [list(k) for k in self.selection], "a": self.adopted, "j": self.finetune_job,
                "c": self.compare_job}
        for name, job in (("r", self.recover_job), ("w", self.sensitivity_job), ("g", self.gradual_job)):
            if job:                                                     # only when there is one
                data[name] = job
        if not self.units.is_empty() or self.units.rule is not None:
            data["u"] = _encode_units(self.units)
        text = json.dumps(data, separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> SessionSnapshot:
        """Inverse of `encode`; a damaged or hand-edited value is a DataError saying what to do."""
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8"))
            choice = ModelChoice(data["m"], str(data["d"]), str(data["t"]))
            steps = tuple(_decode_step(entry) for entry in data["p"])
            selection = tuple((int(layer), int(head)) for layer, head in data["h"])
            adopted = data.get("a")
            jobs = [data.get("j"), data.get("c"), data.get("r"), data.get("w"), data.get("g")]
            units = _decode_units(data["u"]) if "u" in data else UnitSelection()
        except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise DataError("The page address carries a session that cannot be read (it may have been cut or "
                            "edited); the dashboard starts afresh. Open the Model page to begin again.") from error
        finetune, compare, recover, sensitivity, gradual = (j if isinstance(j, str) else None for j in jobs)
        return cls(choice, steps, selection, adopted if isinstance(adopted, str) else None, finetune, compare,
                   recover, sensitivity, gradual, units)


def _encode_units(units: UnitSelection) -> dict[str, Any]:
    """{"l": selected layers, "nb": selected neurons as per-layer bitmasks, "r": [metric, share, layers] of the rule
    that chose them}: a selection of 30% of 6 × 1,024 neurons takes about a thousand characters."""
    rule = units.rule
    return {"l": list(units.layers), "nb": {str(layer): encode_indices(list(n)) for layer, n in units.neurons.items()},
            "r": [rule.metric, rule.share, list(rule.layers)] if rule is not None else None}


def _decode_units(data: dict[str, Any]) -> UnitSelection:
    """Inverse of `_encode_units` (errors are the ValueError / KeyError / TypeError `decode` reports)."""
    rule = data.get("r")
    if rule is not None:
        metric, share, layers = rule
        if not isinstance(metric, str):
            raise ValueError("a neuron rule's metric is text")
        rule = NeuronRule(metric, float(share), tuple(int(layer) for layer in layers))
    neurons = {int(layer): tuple(decode_indices(text)) for layer, text in (data.get("nb") or {}).items()}
    return UnitSelection(tuple(sorted({int(layer) for layer in data.get("l") or []})), (), neurons, rule)


def _encode_step(step: dict[str, Any]) -> list[Any]:
    """[mode, heads, how, strategy, ratio] plus, for steps beyond heads, {"nb": neurons as per-layer bitmasks,
    "l": layers, "r": recovery} and, for a recovered step fitted by a job, {"j": job, "f": fingerprint}."""
    entry = [step["mode"], step["heads"], step["how"], step.get("strategy"), step.get("ratio")]
    if step.get("neurons") or step.get("layers") or step.get("recovery"):
        extra = {"nb": {layer: encode_indices(units) for layer, units in (step.get("neurons") or {}).items()},
                 "l": step.get("layers") or {}, "r": step.get("recovery")}
        if step.get("job") or step.get("fingerprint"):
            extra.update(j=step.get("job"), f=step.get("fingerprint"))
        entry.append(extra)
    return entry


def _decode_step(entry: list[Any]) -> dict[str, Any]:
    """Inverse of `_encode_step`; also reads addresses written before neurons and layers (five items) and those
    that listed neuron indices in full ("n")."""
    mode, heads, how, strategy, ratio = entry[:5]
    extra = entry[5] if len(entry) > 5 else {}
    if len(entry) > 6 or not isinstance(extra, dict):
        raise ValueError("unexpected pruning step entry")
    neurons = extra.get("n")
    if "nb" in extra:
        neurons = {layer: decode_indices(text) for layer, text in extra["nb"].items()}
    return PruneStep.from_dict({"mode": mode, "heads": heads, "how": how, "strategy": strategy, "ratio": ratio,
                                "neurons": neurons, "layers": extra.get("l"), "recovery": extra.get("r"),
                                "job": extra.get("j"), "fingerprint": extra.get("f")}).to_dict()


def encode_indices(indices: list[int]) -> str:
    """Unit indices as a bitmask (bit i of byte i // 8, least significant first) in unpadded base64url: a layer's
    1,536 neurons take 256 characters whatever share is pruned, instead of up to ~7,000 as a JSON list."""
    if any(not isinstance(i, int) or i < 0 for i in indices):
        raise ValueError("unit indices must be whole numbers from 0")
    mask = bytearray((max(indices) // 8 + 1) if indices else 0)
    for i in indices:
        mask[i // 8] |= 1 << (i % 8)
    return base64.urlsafe_b64encode(bytes(mask)).decode("ascii").rstrip("=")


def decode_indices(text: str) -> list[int]:
    """Inverse of `encode_indices`: the sorted indices whose bits are set."""
    if not isinstance(text, str):
        raise ValueError("a unit bitmask is text")
    mask = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return [byte * 8 + bit for byte, value in enumerate(mask) for bit in range(8) if value >> bit & 1]


def snapshot_of(state: DashboardState) -> SessionSnapshot | None:
    """The session as a snapshot (None before a model is open)."""
    if state.working is None:
        return None
    adopted = None
    if state.tuned is not None:
        folder = Path(state.tuned.checkpoint).name
        adopted = f"{state.tuned.job_id}/{'final' if folder == 'model' else folder}"
    return SessionSnapshot(state.choice or ModelChoice(), tuple(state.working.history()), state.selection.heads,
                           adopted, state.job_id, state.compare_job_id, state.recover_job_id,
                           state.sensitivity_job_id, state.gradual_job_id,
                           UnitSelection(state.units.layers, (), state.units.neurons, state.units.rule))


def restorable_source(source: str | None, home: Path) -> bool:
    """Whether a URL may name this model: the bundled one, or a folder Sentinel saved under its data folder.

    A page address is not trusted to make the server read any other folder; those are opened on the Model page.
    """
    if source is None:
        return True
    path = Path(source).expanduser().resolve()
    return path.is_relative_to(home.resolve())
