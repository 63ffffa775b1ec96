"""Each dashboard session's state as plain data: the chosen model, its working copy, selection, caches.

No Streamlit here (the library never imports it): the Streamlit glue that keeps a `DashboardState` in
`st.session_state` and caches the shared model lives next to the pages, in app_support/state.py.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sentinel.errors import SentinelError
from sentinel.models import BUNDLED_MODEL_DIR
from sentinel.ui.analysis import SampleText
from sentinel.ui.selection import HeadSelection
from sentinel.ui.session import WorkingModel

logger = logging.getLogger(__name__)

STATE_KEY = "sentinel_dashboard"
THREADS_ENV = "SENTINEL_TORCH_THREADS"


@dataclass(frozen=True)
class ModelChoice:
    """Which model a session works on: a folder or hub id (None = the bundled model), device and dtype."""

    source: str | None = None
    device: str = "auto"
    dtype: str = "auto"

    def label(self) -> str:
        return "bundled demo model (stdlib-gpt2)" if self.source is None else self.source


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
    caches: dict[str, Any] = field(default_factory=dict)     # results keyed by what they were computed on
    text: SampleText = field(default_factory=SampleText)
    map_samples: int = 8                                      # blocks of sample text the maps run on
    map_seq_len: int = 128                                    # tokens per block
    map_metric: str = "entropy_normalized"                    # the metric last shown on Head maps
    tuned: TunedModel | None = None
    job_id: str | None = None
    notices: list[str] = field(default_factory=list)          # one-shot messages for the next run

    def forget_model(self) -> None:
        """Drop everything computed on the previous model (a new model was loaded)."""
        self.working = None
        self.selection = HeadSelection()
        self.caches.clear()
        self.tuned = None


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
