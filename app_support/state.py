"""Streamlit glue the pages share: the per-process base model, store and job manager, and each session's state.

The base model is cached per process (`st.cache_resource`) and never modified; a session only ever
touches its own `WorkingModel` copy. Everything a session has done lives in one `DashboardState`
object in `st.session_state`, so an error on any page leaves it as it was. The plain-data parts
(`DashboardState`, the analysis, the pruning session) live in `sentinel.ui`, which never imports Streamlit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from sentinel.errors import DataError
from sentinel.generation import generate_text
from sentinel.jobs import JobManager
from sentinel.metrics.scores import HeadScores, UnitScores
from sentinel.models import LoadedModel, load_model
from sentinel.models.int8 import is_int8
from sentinel.store import Store, sentinel_home
from sentinel.ui.analysis import ON_REQUEST, HeadMaps, ModelFigures, block_size_for, compute_maps, measure_figures
from sentinel.ui.finetune import (CHECKPOINTS, FineTuneVerdict, JobView, base_source_of, dashboard_steps, job_view,
                                  judge_finetune, load_tuned, protocol_numbers)
from sentinel.ui.format import EXPECTED_ERRORS, plain_error
from sentinel.ui.pruning import metrics_for
from sentinel.files import visitor_name
from sentinel.ui.library import MODELS_FOLDER
from sentinel.pruning.budget import BudgetResult
from sentinel.ui.budget import BudgetSettings, budget_scores, needs_text, predict_budget
from sentinel.ui.maps_cache import load_cached_maps, save_cached_maps
from sentinel.pruning.units import active_neurons
from sentinel.ui.selection import HeadSelection, keep_existing, set_heads, set_layers
from sentinel.ui.session import PruneStep, WorkingModel, ran_on
from sentinel.evaluation.paired import SpeedComparison, compare_speed
from sentinel.ui.state import (STATE_KEY, URL_KEY, DashboardState, Failure, ModelChoice,  # noqa: F401
                               SessionSnapshot, TunedModel, bundled_model_available, configure_torch_threads,
                               disk_maps_key, maps_key, restorable_source, snapshot_of)

logger = logging.getLogger(__name__)
LAST_BUDGET = "budget-last"          # state.caches key of the last `BudgetPreview`
JOB_KEY = "job"                      # the query parameter of a fine-tune job's address (Fine-tune page)


def dashboard() -> DashboardState:
    """This browser session's state: created on first use, restored from the page address after a reload."""
    configure_torch_threads()             # once per process; here rather than in app.py, which stays free of torch
    if STATE_KEY not in st.session_state:
        st.session_state[STATE_KEY] = DashboardState()
    state = st.session_state[STATE_KEY]
    if state.working is None and URL_KEY in st.query_params:
        restore_session(state, st.query_params[URL_KEY])
    elif state.working is None and JOB_KEY in st.query_params:    # a bare fine-tune job address opened the session
        state.linked_job = st.query_params[JOB_KEY]
    keep_url(state)
    return state


def keep_url(state: DashboardState) -> None:
    """Write the session's snapshot into the page address, so F5 or a bookmark brings the same model back."""
    snapshot = snapshot_of(state)
    if snapshot is None:
        return
    token = snapshot.encode()
    if st.query_params.get(URL_KEY) != token:
        st.query_params[URL_KEY] = token


def restore_session(state: DashboardState, token: str) -> None:
    """Reopen the model a page address names and replay its pruning steps, selection and adopted fine-tune."""
    with report_errors("restoring your session from the page address") as failed:
        snapshot = SessionSnapshot.decode(token)
        if not restorable_source(snapshot.choice.source, sentinel_home()):
            raise DataError(f"The page address names the model {visitor_name(snapshot.choice.source)}; a link may "
                            f"only reopen the bundled model or one saved in the data folder's {MODELS_FOLDER}/ "
                            "folder. Load it on the Model page.")
        with st.spinner("Restoring your session: loading the model and replaying your pruning steps…"):
            working = open_model(state, snapshot.choice)
            working.replay([PruneStep.from_dict(step) for step in snapshot.steps])
            state.selection = set_heads(HeadSelection(), snapshot.selection, selectable=working.active())
            state.units = set_layers(snapshot.units, snapshot.units.layers, selectable=working.blocks())
            state.job_id = snapshot.finetune_job
            state.compare_job_id = snapshot.compare_job
            state.recover_job_id = snapshot.recover_job
            state.sensitivity_job_id = snapshot.sensitivity_job
            state.gradual_job_id = snapshot.gradual_job
            if snapshot.adopted:
                job_id, which = snapshot.adopted.split("/", 1)
                view = job_view(shared_store(), job_id)
                path = None if which == "final" else str(Path(view.job.params["out"]) / CHECKPOINTS / which)
                state.job_id = job_id
                adopt_tuned(state, working, view, path, quiet=True)
    if failed:
        state.forget_model()
        del st.query_params[URL_KEY]


@st.cache_resource(show_spinner=False, max_entries=4)
def shared_base_model(source: str | None, device: str, dtype: str) -> LoadedModel:
    """Load a model once per process; every session copies it and nobody modifies it."""
    return load_model(source, device=device, dtype=None if dtype == "auto" else dtype)


def base_model_for(choice: ModelChoice) -> LoadedModel:
    """The shared base model `choice` names, loaded (or reused) and checked that a session can work on it."""
    base = shared_base_model(choice.source, choice.device, choice.dtype)
    if is_int8(base.model):
        raise DataError(f"{choice.label()} holds int8 weights: it can be compared (Compare page) but not pruned "
                        "or measured head by head. Load its fp32 sparse copy (the same name without '-int8') "
                        "to work on it.")
    return base


def open_model(state: DashboardState, choice: ModelChoice) -> WorkingModel:
    """Load (or reuse the cached) base model and give the session its own copy."""
    working = WorkingModel(base_model_for(choice))
    linked = state.linked_job if state.working is None else None   # kept for the session's first model only
    state.forget_model()
    state.linked_job = linked
    state.choice = choice
    state.working = working
    keep_url(state)
    return working


def require_model(state: DashboardState, drawn_early: DeltaGenerator | None = None) -> WorkingModel:
    """The session's model; loads the bundled model on first use, or stops the page with a pointer to Model.

    `drawn_early`: a placeholder the page filled before the model was loaded (the cached first map); it is
    cleared when no model can be had, so nothing on the page stands for a model that failed to load.
    """
    if state.working is not None:
        return state.working
    if bundled_model_available():
        with st.spinner("Loading the bundled demo model…"), report_errors("loading the bundled model") as failed:
            return open_model(state, ModelChoice())
        if failed:
            if drawn_early is not None:
                drawn_early.empty()
            st.stop()
    if drawn_early is not None:
        drawn_early.empty()
    st.info("No model is loaded yet. Choose one on the Model page.")
    st.page_link("app_pages/model.py", label="Go to the Model page", icon=":material/memory:")
    st.stop()


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
    disk_key = disk_maps_key(state, working)
    maps = cached_maps(state, working)
    if maps is None and disk_key is not None:            # a restart: scores computed by an earlier process
        maps = load_cached_maps(disk_key, working.version)
        if maps is not None:
            state.caches["maps"] = (key, maps)
    maps = maps or HeadMaps({}, working.version, "", 0, 0.0)
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
        if disk_key is not None:
            with report_errors("keeping the head maps for the next start"):
                save_cached_maps(disk_key, maps)
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
                        "compute them on the Maps page first (they take one pass over the text per head).")
    maps = current_maps(state, working, needed)
    if maps is None:
        raise DataError("The head scores could not be computed on the sample text; see the message above.")
    return dict(maps.scores)


def budget_prediction(state: DashboardState, working: WorkingModel, settings: BudgetSettings) -> BudgetResult:
    """What the target would remove from the session's model now; the scores are cached per model version."""
    key = ("budget-scores", id(working), working.version, settings.units,
           state.text.digest if needs_text(settings.units) else None)
    if key not in state.caches:
        data = None
        if needs_text(settings.units):
            size = block_size_for(working.model, state.map_seq_len)
            data = state.text.blocks(working.tokenizer, size, state.map_samples * size).dataloader(batch_size=4)
        with st.spinner("Scoring the units…"):
            state.caches[key] = budget_scores(working.model, settings.units, data)
    result = predict_budget(working, settings, state.caches[key])
    state.caches[LAST_BUDGET] = BudgetPreview(id(working), working.version, settings, state.caches[key], result)
    return result


def last_budget_preview(state: DashboardState, working: WorkingModel) -> BudgetPreview | None:
    """The prediction Prune's target mode showed last, if it was made on the model as it is now (for the maps)."""
    found = state.caches.get(LAST_BUDGET)
    return found if found is not None and (found.working, found.version) == (id(working), working.version) else None


def forget_budget_preview(state: DashboardState) -> None:
    """Prune left its target mode: the maps stop outlining that target's units."""
    state.caches.pop(LAST_BUDGET, None)


@dataclass(frozen=True)
class BudgetPreview:
    """Prune's last target prediction with the scores it ranked by, tied to the model version it was made on."""

    working: int                    # id() of the WorkingModel
    version: int
    settings: BudgetSettings
    scores: dict[str, UnitScores]   # {kind: scores the target ranked by}
    result: BudgetResult


def base_figures(state: DashboardState, working: WorkingModel) -> ModelFigures | None:
    """Before-column figures of the model as loaded (computed once per text)."""
    key = ("figures-base", id(working.base))
    if key not in state.caches:
        with st.spinner("Measuring the model as loaded…"), report_errors("measuring the base model") as failed:
            state.caches[key] = measure_figures(working.base.model, working.tokenizer)
        if failed:
            return None
    return state.caches[key]


def current_figures(state: DashboardState, working: WorkingModel) -> ModelFigures | None:
    """After-column figures of the session's model now (the base figures while nothing is pruned)."""
    if not working.steps:
        return base_figures(state, working)
    key = ("figures", id(working), working.version)
    if state.caches.get("figures-now", (None,))[0] != key:
        with st.spinner("Measuring your pruned model…"), report_errors("measuring the pruned model") as failed:
            state.caches["figures-now"] = (key, measure_figures(working.model, working.tokenizer))
        if failed:
            return None
    return state.caches["figures-now"][1]


def measured_so_far(state: DashboardState, working: WorkingModel) -> tuple[float | None, float | None]:
    """The perplexities of the session's model now and of its adopted fine-tuned model, where a page has measured
    them already (nothing is measured here)."""
    now = state.caches.get("figures-now")
    pruned = now[1].perplexity if now is not None and now[0] == ("figures", id(working), working.version) else None
    if not working.steps and ("figures-base", id(working.base)) in state.caches:
        pruned = state.caches[("figures-base", id(working.base))].perplexity
    tuned = state.caches.get(("figures-tuned", state.tuned.checkpoint)) if state.tuned is not None else None
    return pruned, tuned.perplexity if tuned is not None else None


def tuned_figures(state: DashboardState) -> ModelFigures | None:
    """Figures of the fine-tuned model (computed once per adopted model folder)."""
    if state.tuned is None:
        return None
    key = ("figures-tuned", state.tuned.checkpoint)
    if key not in state.caches:
        with st.spinner("Measuring the fine-tuned model…"), report_errors("measuring the fine-tuned model") as failed:
            tokenizer = state.working.tokenizer if state.working else None
            state.caches[key] = measure_figures(state.tuned.model, tokenizer)
        if failed:
            return None
    return state.caches[key]


def cached_speed(state: DashboardState, working: WorkingModel) -> SpeedComparison | None:
    """The paired timing of the session's model as it is now, if it has run already (None: not yet)."""
    found = state.caches.get("speed-now")
    return found[1] if found is not None and found[0] == ("speed", id(working), working.version) else None


def speed_comparison(state: DashboardState, working: WorkingModel) -> SpeedComparison | None:
    """Base vs. the session's model now: size change, FLOP prediction, interleaved timings (once per version)."""
    key = ("speed", id(working), working.version)
    if state.caches.get("speed-now", (None,))[0] != key:
        with st.spinner("Timing the base and your model in turns…"), report_errors("timing the models") as failed:
            state.caches["speed-now"] = (key, compare_speed(working.base.model, working.model, working.tokenizer))
        if failed:
            return None
    return state.caches["speed-now"][1]


@st.cache_resource(show_spinner=False)
def shared_store() -> Store:
    """The experiment store under $SENTINEL_HOME (one handle per process; it is thread-safe)."""
    return Store()


@st.cache_resource(show_spinner=False)
def shared_jobs() -> JobManager:
    """The process's job manager: fine-tunes run on its worker threads while sessions keep working."""
    return JobManager(shared_store())


def job_model_note(working: WorkingModel, view: JobView) -> str | None:
    """Why the job's model is not the session's (another base model or other pruning steps); None when it is."""
    config = shared_store().get_experiment(view.job.experiment_id).config if view.job.experiment_id else {}
    if ran_on(config, working):
        return None
    then, base = len(config.get("dashboard_steps") or []), config.get("base_model")
    return (f"This job ran on {Path(str(base)).name if base else 'an unrecorded model'} with {then} pruning "
            f"step{'s' if then != 1 else ''}; your session's model is {Path(working.base.source).name} with "
            f"{len(working.steps)}.")


def restore_job_session(state: DashboardState, view: JobView) -> WorkingModel:
    """Open the model the job started from (its base model with its pruning steps replayed), so 'pruned' on Compare
    is that model. Only on the user's request or when the session was opened from the job's address: it replaces
    the session's model and its steps."""
    store = shared_store()
    source = base_source_of(store, view.job)
    choice = state.choice or ModelChoice()
    working = open_model(state, ModelChoice(source, choice.device, choice.dtype))
    working.replay(dashboard_steps(store, view.job))
    state.job_id = view.job.id
    keep_url(state)
    return working


def job_verdict(state: DashboardState, working: WorkingModel, view: JobView) -> FineTuneVerdict | None:
    """A succeeded job judged under the protocol: the before/after the job measured itself (once per job).

    Runs recorded before jobs measured them are measured here, alike (the job's start and result models, with the
    start model's own tokenizer), and the numbers are added to their record."""
    key = ("verdict", view.job.id)
    if key not in state.caches:
        with report_errors("judging the fine-tune") as failed:
            summary = shared_store().get_experiment(view.job.experiment_id).summary if view.job.experiment_id else {}
            numbers = protocol_numbers(summary)
            if numbers is None:
                with st.spinner("Measuring the model before and after fine-tuning…"):
                    device = str(working.base.device)
                    start = load_model(str(Path(view.job.params["out"]) / "start"), device=device)
                    before = measure_figures(start.model, start.tokenizer)
                    after = measure_figures(load_tuned(view, device), start.tokenizer)
                numbers = (before.perplexity, after.perplexity, after.perplexity_tokens)
                described = after.protocol_note
            else:
                described = summary.get("protocol") if isinstance(summary.get("protocol"), str) else None
            verdict = judge_finetune(view, *numbers, described=described)
            if protocol_numbers(summary) is None:
                record_verdict(view, verdict)
            state.caches[key] = verdict
        if failed:
            return None
    return state.caches[key]


def record_verdict(view: JobView, verdict: FineTuneVerdict) -> None:
    """Add the protocol's before/after to the run's experiment summary, so Experiments shows the same numbers."""
    if view.job.experiment_id is None:
        return
    shared_store().update_experiment(view.job.experiment_id, summary={
        "protocol_perplexity_before": verdict.before, "protocol_perplexity_after": verdict.after,
        "protocol_tokens": verdict.tokens, "best_step": verdict.best_step, "best_perplexity": verdict.best_value})


def adopt_tuned(state: DashboardState, working: WorkingModel, view: JobView, path: str | None = None,
                quiet: bool = False) -> None:
    """Make the job's model (or its kept checkpoint at `path`) the session's fine-tuned model: the user's click."""
    model = state.caches.get(("tuned-model", view.job.id)) if path is None else None
    if model is None:
        model = load_tuned(view, str(working.base.device), path)
    steps = dashboard_steps(shared_store(), view.job)
    state.tuned = TunedModel(model, view.job.id, path or view.model_path or "", [s.to_dict() for s in steps])
    if not quiet:
        notify(state, f"Job {view.job.id}'s {'best checkpoint' if path else 'fine-tuned model'} is now your "
                      "fine-tuned model (the third column on Compare).")


def quick_sample(state: DashboardState, working: WorkingModel, prompt: str, tuned: bool) -> str:
    """30 greedy tokens after `prompt` from the base model (tuned=False) or the session's model now (cached)."""
    model = working.model if tuned else working.base.model
    key = ("sample", id(working) if tuned else id(working.base), working.version if tuned else 0, prompt)
    if key not in state.caches:
        state.caches[key] = generate_text(model, working.tokenizer, prompt, max_new_tokens=30, greedy=True).text
    return state.caches[key]


def keep_selection(state: DashboardState, working: WorkingModel) -> None:
    """After a step that did not prune the selection: keep the selected heads, layers and neurons still active, and
    say which went (a toast now, and a note beside the selection on Prune while the model stays as it is)."""
    kept = keep_existing(state.selection, state.units, working.active(), working.blocks(),
                         active_neurons(working.model))
    state.selection, state.units = kept.heads, kept.units
    note = kept.note()
    state.selection_note = (id(working), working.version, note) if note else None
    if note:
        notify(state, note)


def selection_note(state: DashboardState, working: WorkingModel) -> str | None:
    """What the last step dropped from the selection, while the model is still as that step left it."""
    found = state.selection_note
    return found[2] if found is not None and found[:2] == (id(working), working.version) else None


def notify(state: DashboardState, message: str) -> None:
    """Queue a toast for the next run (an action that reruns the page would lose a toast shown now)."""
    state.notices.append(message)


def show_notices(state: DashboardState) -> None:
    """Show and forget the queued toasts."""
    while state.notices:
        st.toast(state.notices.pop(0), icon=":material/info:")
