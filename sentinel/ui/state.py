"""Streamlit glue the pages share: the per-process base model and job manager, and each session's state.

The base model is cached per process (`st.cache_resource`) and never modified; a session only ever
touches its own `WorkingModel` copy. Everything a session has done lives in one `DashboardState`
object in `st.session_state`, so an error on any page leaves it as it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
import torch
from torch import nn

from sentinel.errors import DataError, SentinelError
from sentinel.generation import generate_text
from sentinel.jobs import JobManager
from sentinel.metrics.scores import HeadScores
from sentinel.models import BUNDLED_MODEL_DIR, LoadedModel, load_model
from sentinel.store import Store
from sentinel.ui.analysis import (ON_REQUEST, HeadMaps, ModelFigures, SampleText, block_size_for, compute_maps,
                                  measure_figures)
from sentinel.ui.finetune import JobView, base_source_of, dashboard_steps, load_tuned
from sentinel.ui.format import EXPECTED_ERRORS, plain_error
from sentinel.ui.pruning import metrics_for
from sentinel.ui.selection import HeadSelection
from sentinel.ui.session import WorkingModel

logger = logging.getLogger(__name__)

STATE_KEY = "sentinel_dashboard"


@dataclass(frozen=True)
class ModelChoice:
    """Which model a session works on: a folder or hub id (None = the bundled model), device and dtype."""

    source: str | None = None
    device: str = "auto"
    dtype: str = "auto"

    def label(self) -> str:
        return f"bundled demo model ({BUNDLED_MODEL_DIR.name})" if self.source is None else self.source


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


def dashboard() -> DashboardState:
    """This browser session's state (created on first use)."""
    if STATE_KEY not in st.session_state:
        st.session_state[STATE_KEY] = DashboardState()
    return st.session_state[STATE_KEY]


@st.cache_resource(show_spinner=False, max_entries=4)
def shared_base_model(source: str | None, device: str, dtype: str) -> LoadedModel:
    """Load a model once per process; every session copies it and nobody modifies it."""
    return load_model(source, device=device, dtype=None if dtype == "auto" else dtype)


def bundled_model_available() -> bool:
    return (BUNDLED_MODEL_DIR / "config.json").is_file()


def open_model(state: DashboardState, choice: ModelChoice) -> WorkingModel:
    """Load (or reuse the cached) base model and give the session its own copy."""
    base = shared_base_model(choice.source, choice.device, choice.dtype)
    working = WorkingModel(base)
    state.forget_model()
    state.choice = choice
    state.working = working
    return working


def require_model(state: DashboardState) -> WorkingModel:
    """The session's model; loads the bundled model on first use, or stops the page with a pointer to Model."""
    if state.working is not None:
        return state.working
    if bundled_model_available():
        with st.spinner("Loading the bundled demo model…"), report_errors("loading the bundled model") as failed:
            return open_model(state, ModelChoice())
        if failed:
            st.stop()
    st.info("No model is loaded yet. Choose one on the Model page.")
    st.page_link("app_pages/model.py", label="Go to the Model page", icon=":material/memory:")
    st.stop()


@dataclass
class Failure:
    """Truthy once `report_errors` caught something."""

    message: str = ""

    def __bool__(self) -> bool:
        return bool(self.message)


@contextmanager
def report_errors(doing: str) -> Iterator[Failure]:
    """Show an expected failure (bad input, missing model, out of memory, unwritable folder) as a plain
    `st.error` and carry on; anything else is a bug and propagates to Streamlit's error display."""
    failure = Failure()
    try:
        yield failure
    except EXPECTED_ERRORS as error:
        failure.message = plain_error(error, doing)
        logger.warning("%s: %s", doing, error)
        st.error(failure.message, icon=":material/error:")


def maps_key(state: DashboardState, working: WorkingModel) -> tuple:
    """What a head map depends on: the model version, the text and the sampling settings."""
    return (id(working), working.version, state.text.digest, state.map_samples, state.map_seq_len)


def cached_maps(state: DashboardState, working: WorkingModel) -> HeadMaps | None:
    """The scores computed so far on the model as it is now and the current text (None if none yet)."""
    cached = state.caches.get("maps")
    return cached[1] if cached is not None and cached[0] == maps_key(state, working) else None


def current_maps(state: DashboardState, working: WorkingModel, metrics: Iterable[str],
                 progress: Callable[[int, int], None] | None = None) -> HeadMaps | None:
    """Scores of the session's model as it is now for `metrics` (each computed once per model version and text).

    Returns None when the computation failed (the error is already on the page).
    """
    key = maps_key(state, working)
    maps = cached_maps(state, working) or HeadMaps({}, working.version, "", 0, 0.0)
    missing = maps.missing(metrics)
    if missing:
        seq_len = block_size_for(working.model, state.map_seq_len)
        with st.spinner("Measuring every head on the sample text…"), report_errors("computing the head maps") as failed:
            blocks = state.text.blocks(working.tokenizer, seq_len, state.map_samples * seq_len)
            maps.merge(compute_maps(working.model, working.tokenizer, blocks, missing, working.version, progress))
            maps.text, maps.tokens = blocks.source, blocks.num_tokens
        if failed:
            return None
        state.caches["maps"] = (key, maps)
    return maps


def strategy_scores(state: DashboardState, working: WorkingModel, strategy: str) -> dict[str, HeadScores]:
    """The scores `strategy` ranks by, measured on the model as it is now (loss impact only if computed)."""
    needed = metrics_for(strategy)
    if not needed:
        return {}
    on_request = [m for m in needed if m in ON_REQUEST]
    have = (cached_maps(state, working) or HeadMaps({}, working.version, "", 0, 0.0)).scores
    if any(m not in have for m in on_request):
        raise DataError(f"The {strategy} strategy needs {', '.join(on_request)} scores of the model as it is now; "
                        "compute them on the Head maps page first (they take one pass over the text per head).")
    maps = current_maps(state, working, needed)
    if maps is None:
        raise DataError("The head scores could not be computed on the sample text; see the message above.")
    return dict(maps.scores)


def base_figures(state: DashboardState, working: WorkingModel) -> ModelFigures | None:
    """Before-column figures of the model as loaded (computed once per text)."""
    key = ("figures-base", id(working.base), state.text.digest)
    if key not in state.caches:
        with st.spinner("Measuring the model as loaded…"), report_errors("measuring the base model") as failed:
            state.caches[key] = measure_figures(working.base.model, working.tokenizer, state.text)
        if failed:
            return None
    return state.caches[key]


def current_figures(state: DashboardState, working: WorkingModel) -> ModelFigures | None:
    """After-column figures of the session's model now (the base figures while nothing is pruned)."""
    if not working.steps:
        return base_figures(state, working)
    key = ("figures", id(working), working.version, state.text.digest)
    if state.caches.get("figures-now", (None,))[0] != key:
        with st.spinner("Measuring your pruned model…"), report_errors("measuring the pruned model") as failed:
            state.caches["figures-now"] = (key, measure_figures(working.model, working.tokenizer, state.text))
        if failed:
            return None
    return state.caches["figures-now"][1]


def tuned_figures(state: DashboardState) -> ModelFigures | None:
    """Figures of the fine-tuned model (computed once per job and text)."""
    if state.tuned is None:
        return None
    key = ("figures-tuned", state.tuned.job_id, state.text.digest)
    if key not in state.caches:
        with st.spinner("Measuring the fine-tuned model…"), report_errors("measuring the fine-tuned model") as failed:
            tokenizer = state.working.tokenizer if state.working else None
            state.caches[key] = measure_figures(state.tuned.model, tokenizer, state.text)
        if failed:
            return None
    return state.caches[key]


@st.cache_resource(show_spinner=False)
def shared_store() -> Store:
    """The experiment store under $SENTINEL_HOME (one handle per process; it is thread-safe)."""
    return Store()


@st.cache_resource(show_spinner=False)
def shared_jobs() -> JobManager:
    """The process's job manager: fine-tunes run on its worker threads while sessions keep working."""
    return JobManager(shared_store())


def adopt_finished_job(state: DashboardState, working: WorkingModel, view: JobView) -> None:
    """Make a succeeded job's model the session's fine-tuned model (once), with a toast.

    A session opened on the job's URL has an unpruned copy: it replays the job's pruning steps first, so
    the Compare page's 'pruned' column is the model the job started from.
    """
    if state.tuned is not None and state.tuned.job_id == view.job.id:
        return
    store = shared_store()
    source = base_source_of(store, view.job)
    if Path(working.base.source).resolve() != Path(source or BUNDLED_MODEL_DIR).resolve():
        choice = state.choice or ModelChoice()
        working = open_model(state, ModelChoice(source, choice.device, choice.dtype))
    steps = dashboard_steps(store, view.job)
    if steps and not working.steps:
        working.replay(steps)
    model = load_tuned(view, str(working.base.device))
    state.tuned = TunedModel(model, view.job.id, view.model_path or "", [s.to_dict() for s in steps])
    st.toast(f"Fine-tuning finished: job {view.job.id}'s model is now your fine-tuned model.",
             icon=":material/check_circle:")


def quick_sample(state: DashboardState, working: WorkingModel, prompt: str, tuned: bool) -> str:
    """30 greedy tokens after `prompt` from the base model (tuned=False) or the session's model now (cached)."""
    model = working.model if tuned else working.base.model
    key = ("sample", id(working) if tuned else id(working.base), working.version if tuned else 0, prompt)
    if key not in state.caches:
        state.caches[key] = generate_text(model, working.tokenizer, prompt, max_new_tokens=30, greedy=True).text
    return state.caches[key]


def notify(state: DashboardState, message: str) -> None:
    """Queue a toast for the next run (an action that reruns the page would lose a toast shown now)."""
    state.notices.append(message)


def show_notices(state: DashboardState) -> None:
    """Show and forget the queued toasts."""
    while state.notices:
        st.toast(state.notices.pop(0), icon=":material/info:")


THREADS_ENV = "SENTINEL_TORCH_THREADS"


@st.cache_resource(show_spinner=False)
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
