"""Streamlit glue for the Compare page: which models are chosen, loading saved ones once per process, and each
model's perplexity and size measured once per model identity."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import streamlit as st
from torch import nn

from app_support.state import base_figures, current_figures, report_errors, shared_store, tuned_figures
from sentinel.models import LoadedModel, load_model
from sentinel.models.int8 import is_int8_folder
from sentinel.ui.compare import (MAX_MODELS, Candidate, SizeFigures, TimedModel, default_choice, folder_identity,
                                 library_candidates, session_candidates, size_figures)
from sentinel.ui.protocol import protocol_perplexity
from sentinel.ui.session import WorkingModel
from sentinel.ui.state import DashboardState

CHOICE_KEY = "compare_models"          # the multiselect's widget key
SPARSE_KEY = "sparse-latest"           # where the Weights page keeps its sparse copy: (settings key, SparseModel)


@dataclass
class Column:
    """A chosen model ready to compare: the model, its tokenizer, what identifies it, and its folder if saved."""

    candidate: Candidate
    model: nn.Module
    tokenizer: Any
    identity: tuple
    folder: str | None = None


def candidates(state: DashboardState) -> dict[str, Candidate]:
    """Every model the page can show now, by key: the session's, then the library's (listing errors shown)."""
    found = session_candidates(state.tuned is not None, SPARSE_KEY in state.caches)
    with report_errors("listing the saved models"):
        found += library_candidates(shared_store(), skip=[state.tuned.checkpoint] if state.tuned else [])
    return {c.key: c for c in found}


def choose(state: DashboardState, available: dict[str, Candidate]) -> list[str]:
    """The multiselect (at most `MAX_MODELS`); the choice outlives a visit to another page. Until someone
    changes it, it follows the default (base, pruned, and the fine-tuned model once there is one)."""
    default = default_choice(list(available.values()))
    remembered = state.caches.get("compare-choice")
    wanted = st.session_state.get(CHOICE_KEY, remembered if remembered is not None else default)
    wanted = [key for key in wanted if key in available]                            # saved models may have gone
    if len(wanted) > MAX_MODELS:
        st.warning(f"Compare shows at most {MAX_MODELS} models side by side; {len(wanted)} were chosen, so only "
                   f"the first {MAX_MODELS} are kept.", icon=":material/warning:")
        wanted = wanted[:MAX_MODELS]
    st.session_state[CHOICE_KEY] = wanted
    chosen = st.multiselect(
        "Models", list(available), key=CHOICE_KEY, format_func=lambda key: available[key].label,
        max_selections=MAX_MODELS, placeholder="Choose up to four models",
        help="Your session's models (base, pruned, fine-tuned, the Weights page's sparse copy) and every model "
             "saved or exported under the data folder, including fine-tune results. The first one is the "
             "reference the others are compared with.")
    state.caches["compare-choice"] = None if chosen == default else list(chosen)
    return list(chosen)


@st.cache_resource(show_spinner=False, max_entries=8)
def library_model(path: str, identity: tuple, device: str, dtype: str) -> LoadedModel:
    """A saved model loaded once per process (per folder contents); nobody modifies it."""
    return load_model(path, device=device, dtype=None if dtype == "auto" else dtype)


def column(state: DashboardState, working: WorkingModel, candidate: Candidate) -> Column | None:
    """The chosen model, loaded if it is a saved one; None (with a message naming it) when it cannot be."""
    key = candidate.key
    if key == "base":
        return Column(candidate, working.base.model, working.tokenizer, ("base", id(working.base)))
    if key == "pruned":
        return Column(candidate, working.model, working.tokenizer, ("pruned", id(working), working.version))
    if key == "tuned" and state.tuned is not None:
        return Column(candidate, state.tuned.model, working.tokenizer, ("tuned", state.tuned.checkpoint))
    if key == "sparse" and SPARSE_KEY in state.caches:
        settings, sparse = state.caches[SPARSE_KEY]
        return Column(candidate, sparse.model, working.tokenizer, ("sparse", settings))
    if candidate.path is None:
        st.warning(f"{candidate.label} is no longer held in this session; choose another model.",
                   icon=":material/warning:")
        return None
    loaded = None
    with st.spinner(f"Loading {candidate.label}…"), report_errors(f"loading the model '{candidate.label}'"):
        identity = folder_identity(candidate.path)
        loaded = library_model(candidate.path, identity, *library_placement(state, working, candidate.path))
    if loaded is None:
        return None
    return Column(candidate, loaded.model, loaded.tokenizer, ("saved", *identity), candidate.path)


def library_placement(state: DashboardState, working: WorkingModel, path: str) -> tuple[str, str]:
    """(device, dtype) a saved model is loaded with: the session's, except int8 folders (CPU only, float32)."""
    if is_int8_folder(path):
        return "cpu", "auto"
    return str(working.base.device), state.choice.dtype if state.choice else "auto"


def timed_model(state: DashboardState, working: WorkingModel, col: Column) -> TimedModel:
    """What the speed job needs of a column: a library model's folder, or the session's model itself (saved for
    the job), each on the device and in the dtype the page holds it."""
    if col.folder is not None:
        return TimedModel(col.candidate.key, col.candidate.label, col.folder,
                          *library_placement(state, working, col.folder))
    weight = next(col.model.parameters())
    return TimedModel(col.candidate.key, col.candidate.label, None, str(weight.device),
                      str(weight.dtype).removeprefix("torch."), col.model, col.tokenizer)


def stable_identity(state: DashboardState, working: WorkingModel, col: Column) -> tuple:
    """A column's identity that a reload rebuilds the same (the session's models by how they were made, not by
    object id), so a speed job started before a reload is found again; with the device and dtype it runs in, so
    a timing on another device or in another dtype is never shown for it."""
    key = col.candidate.key
    timed = timed_model(state, working, col)
    placement = (timed.device, timed.dtype)
    if key == "base":
        return ("base", working.base.source, *placement)
    if key == "pruned":
        return ("pruned", working.base.source, json.dumps(working.history(), sort_keys=True), *placement)
    return (*col.identity, *placement)          # tuned: its folder; sparse: its settings; saved: its files


@dataclass(frozen=True)
class Perplexity:
    """A protocol perplexity and how many tokens it scored."""

    value: float
    tokens: int


def perplexity(state: DashboardState, working: WorkingModel, col: Column) -> Perplexity | None:
    """The protocol perplexity of a column, measured once per model identity: the session's models share the
    Prune page's figures, the sparse copy the Weights page's; None when it could not be measured (shown)."""
    key = col.candidate.key
    if key in ("base", "pruned", "tuned"):
        figures = {"base": lambda: base_figures(state, working), "pruned": lambda: current_figures(state, working),
                   "tuned": lambda: tuned_figures(state)}[key]()
        return None if figures is None else Perplexity(figures.perplexity, figures.perplexity_tokens)
    cache_key = ("ppl-sparse", col.identity[1]) if key == "sparse" else ("ppl-saved", col.identity)
    if cache_key not in state.caches:
        with st.spinner(f"Measuring the perplexity of {col.candidate.label}…"), \
                report_errors(f"measuring the perplexity of '{col.candidate.label}'") as failed:
            state.caches[cache_key] = protocol_perplexity(col.model, col.tokenizer)
        if failed:
            return None
    result = state.caches[cache_key]
    return Perplexity(result.perplexity, result.tokens_evaluated)


def size(state: DashboardState, col: Column) -> SizeFigures:
    """Parameters, non-zero parameters and bytes of a column (once per model identity)."""
    cache_key = ("compare-size", col.identity)
    if cache_key not in state.caches:
        state.caches[cache_key] = size_figures(col.model, col.folder)
    return state.caches[cache_key]
