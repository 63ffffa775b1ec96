"""Streamlit pieces more than one page draws: the clickable head map, the selected-heads list, the neuron and
layer maps with their selection (layers by click or list, neurons by a rule)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import streamlit as st

from sentinel.metrics.scores import HeadScores, UnitScores
from sentinel.pruning.plan import PruningPlan
from app_support.state import keep_url, selection_note
from app_support.progress import job_progress
from sentinel.charts import METRICS, SELECTION_NAME, head_frame, head_heatmap, pruned_first
from sentinel.ui.selection import (NEURON_RULE_MAX, HeadKey, NeuronRule, apply_chart_event, apply_layer_event,
                                   forget_layer_clicks, forget_seen, head_label, keep_present, neurons_by_rule,
                                   parse_head_label, set_heads, set_layers, set_neurons)
from sentinel.ui.format import job_failure, plural
from sentinel.ui.session import WorkingModel
from sentinel.ui.state import DashboardState

if TYPE_CHECKING:
    from sentinel.ui.unit_maps import UnitMap

LIST_KEY = "selected_heads_list"
LAYERS_LIST_KEY = "selected_layers_list"
LAYER_CHART_KEY = "layer_map_chart"
RULE_SHARE_KEY, RULE_LAYERS_KEY = "neuron_rule_share", "neuron_rule_layers"

logger = logging.getLogger(__name__)


def read_chart_clicks(state: DashboardState, working: WorkingModel, chart_key: str) -> None:
    """Fold the map's last click (kept by Streamlit under `chart_key`) into the session's selection.

    Done before the chart is drawn, so the outline shows the selection the click made.
    """
    event = st.session_state.get(chart_key)
    if event is None:                 # the chart widget is new on this page view: no click yet
        state.selection = forget_seen(state.selection)
        return
    layout = working.base.layout
    points = event["selection"].get(SELECTION_NAME, [])
    state.selection = apply_chart_event(state.selection, points, layout.num_layers, layout.num_heads,
                                        selectable=working.active())


def head_map(state: DashboardState, working: WorkingModel, scores: HeadScores, metric: str, chart_key: str,
             title: str = "", preview: Iterable[HeadKey] = ()) -> None:
    """The layer × head heat map of `scores`, pruned heads marked, `preview` heads outlined in dashed orange;
    click picks a head, shift-click adds one."""
    read_chart_clicks(state, working, chart_key)
    keep_url(state)                       # the click may have changed the selection the address carries
    info = METRICS[metric]
    frame = head_frame(scores.values.tolist(), working.status(), state.selection.heads, preview)
    st.altair_chart(head_heatmap(frame, info, title), key=chart_key, on_select="rerun",
                    selection_mode=[SELECTION_NAME], width="stretch")
    outlines = "Red outline: selected heads. " + ("Dashed orange outline: the heads pressing Prune would prune. "
                                                  if frame["preview"].any() else "")
    st.caption(f"**{info.label}.** {info.legend} {pruned_first(metric)} Grey cells marked ✕ are pruned heads "
               f"(no score). {outlines}Click a cell to select that head; shift-click to add or drop more.")


def selection_list(state: DashboardState, working: WorkingModel) -> None:
    """The selected heads as an editable list (the same selection the map and the Prune page use)."""
    active = working.active()
    st.session_state[LIST_KEY] = [head_label(k) for k in state.selection.heads]

    def edited() -> None:
        chosen = [parse_head_label(label) for label in st.session_state[LIST_KEY]]
        state.selection = set_heads(state.selection, chosen, selectable=active)

    st.multiselect("Selected heads", [head_label(k) for k in active], key=LIST_KEY, on_change=edited,
                   placeholder="Click cells in the map, or pick heads here",
                   help="Layer L, head H, in the model's original numbering.")


def unit_maps_view(state: DashboardState, working: WorkingModel, kind: str) -> None:
    """The Maps page for neurons (percentile grid, histograms per layer, lowest/highest table) or layers (bars per
    part), with what Prune's target would remove outlined when it has a prediction for the model as it is now."""
    from app_support.state import last_budget_preview, report_errors
    from sentinel.ui.analysis import block_size_for
    from sentinel.ui.metric_jobs import runs_in_background
    from sentinel.ui.unit_maps import LAYER_METRICS, NEURON_METRICS, compute_unit_map, neuron_extremes

    metrics = NEURON_METRICS if kind == "neuron" else LAYER_METRICS
    rule = state.units.rule
    first = rule.metric if kind == "neuron" and rule is not None and rule.metric in metrics else list(metrics)[0]
    metric = st.segmented_control("Metric", list(metrics), format_func=lambda m: metrics[m][0],
                                  default=first, key=f"{kind}_map_metric", required=True)
    label, _ = metrics[metric]
    key = ("unit-map", kind, metric, id(working), working.version, state.text.digest, state.map_samples,
           state.map_seq_len)
    if key not in state.caches:
        size = block_size_for(working.model, state.map_seq_len)
        parameters = sum(p.numel() for p in working.model.parameters())
        if runs_in_background(metric, parameters, state.map_samples * size):
            explain = (f"{label} runs over the whole sample text, which takes a while on a model this size."
                       if metric != "loss_impact" else "Loss impact switches each layer and each of its parts off "
                       "alone and measures the loss again: one pass over the text each.")
            computed = metric_job_view(state, working, kind, metric, size, label, explain, f"{kind}_{metric}_run")
            if computed is None:
                return
            state.caches[key] = computed
        else:
            with report_errors(f"computing the {kind} map"), st.spinner(f"Computing {label.lower()}…"):
                blocks = state.text.blocks(working.tokenizer, size, state.map_samples * size)
                state.caches[key] = compute_unit_map(working.model, working.tokenizer, kind, metric, blocks)
    found = state.caches.get(key)
    if found is None:
        return
    preview = last_budget_preview(state, working)
    target = preview.settings.label() if preview is not None else None
    plan = preview.result.plan if preview is not None else None
    if kind == "neuron":
        selected = neuron_rule(state, working, found.scores)
        if selected is not None:               # the session's selection takes the outlines while it has one
            neuron_map(found.scores, metric, selected, state.units.rule.describe(), key_prefix="neuron_map",
                       selection=True)
            if plan is not None:
                st.caption(f"Prune's target ({target}) is not outlined while you have a neuron selection; set the "
                           "share to 0 to see it again.")
        else:
            neuron_map(found.scores, metric, plan, target, key_prefix="neuron_map")
        neuron_selection_link(state)
        st.markdown("**Lowest- and highest-scoring neurons**")
        st.dataframe(neuron_extremes(found.scores), hide_index=True, key="neuron_extremes")
    else:
        read_layer_clicks(state, working)
        keep_url(state)                   # the click may have changed the selection the address carries
        layer_map(found.scores, metric, plan, target, key_prefix="layer_map", selected=state.units.layers)
        layer_selection_list(state, working)
        layer_selection_link(state)
    where = f" over {found.tokens:,} tokens of {state.text.name}" if found.tokens else " from the weights alone"
    st.caption(f"Computed on your model ({plural(len(working.steps), 'pruning step')}){where} in {found.seconds:.2f} s.")
    st.download_button("Download these scores (CSV)", found.scores.to_frame().to_csv(index=False).encode("utf-8"),
                       file_name=f"{kind}_{metric}_scores.csv", mime="text/csv", icon=":material/download:",
                       key=f"{kind}_scores_csv")


UNIT_METRICS_JOB = "unit-metrics-job"       # state.caches[(this, kind, metric)]: this session's latest job id


def metric_job_view(state: DashboardState, working: WorkingModel, kind: str, metric: str, block_size: int,
                    label: str, explain: str, button_key: str) -> UnitMap | None:
    """An expensive head, neuron or layer metric as a background job: its scores once a job for exactly this model,
    pruning, text and sampling has succeeded (this session's, or one found again after a reload); else the running
    job's progress with Cancel, or `explain` and the button that starts one (saying so when this session's last one
    was cancelled or failed). None while there are no scores to draw."""
    from app_support.state import report_errors, shared_jobs, shared_store
    from sentinel.ui.choices import ModelChoice
    from sentinel.ui.metric_jobs import (MetricRequest, metric_job_for, metric_signature, start_metric_job,
                                         unit_map_of)

    choice = state.choice or ModelChoice()
    request = MetricRequest(kind, metric, state.map_samples, block_size, choice.device, choice.dtype)
    signature = metric_signature(working.base.source, working.history(), state.text, request)
    own_key = (UNIT_METRICS_JOB, kind, metric)
    job = metric_job_for(shared_store(), signature, state.caches.get(own_key))
    if job is not None and job.state == "succeeded":
        with report_errors(f"reading the {kind} scores the background job computed"):
            return unit_map_of(job)
        return None
    if job is not None and job.state in ("queued", "running"):
        job_progress(job.id, f"Computing {label.lower()} in the background", "unit_metrics_cancel",
                     "Stop computing; nothing computed so far is kept.")
        return None
    if job is not None and job.state == "cancelled":          # only this session's own job is found in this state
        st.info(f"Computing {label.lower()} was cancelled: nothing was kept. Press the button to compute it again.",
                icon=":material/cancel:")
    elif job is not None:
        st.warning(f"Computing {label.lower()} {job.state}: {job_failure(job)}", icon=":material/warning:")
    st.info(f"{explain} It runs in the background with progress and Cancel, and a reload finds it again.")
    if st.button(f"Compute {label.lower()}", key=button_key, type="primary", icon=":material/play_arrow:"):
        with report_errors(f"starting the {kind} scores' job") as failed, \
                st.spinner("Saving your model for the job…"):
            state.caches[own_key] = start_metric_job(shared_jobs(), working.model, working.tokenizer, state.text,
                                                     request, signature)
        if not failed:
            st.rerun()                 # draw the page again with the job's progress
    return None


def adopt_head_scores(state: DashboardState, working: WorkingModel, metric: str, found: UnitMap) -> None:
    """Add a job's head scores to the session's head maps of the model as it is now (and to the maps kept on disk
    for the next start), as if the page had computed them."""
    from app_support.state import current_maps, report_errors
    from sentinel.ui.maps_cache import save_cached_maps
    from sentinel.ui.state import disk_maps_key, maps_key

    from sentinel.ui.analysis import HeadMaps

    maps = current_maps(state, working, [])
    if maps is None:
        return
    if maps.tokens and (maps.text, maps.tokens) != (found.text, found.tokens):
        # scores of another text or sampling must not sit beside these under one "computed over N tokens"
        logger.info("Head maps measured on %s tokens of %s replaced by the job's (%s tokens of %s).",
                    maps.tokens, maps.text, found.tokens, found.text)
        maps = HeadMaps({}, working.version, found.text, found.tokens, 0.0)
    maps.scores[metric] = found.scores
    maps.seconds += found.seconds
    maps.text, maps.tokens = found.text, found.tokens
    state.caches["maps"] = (maps_key(state, working), maps)
    disk_key = disk_maps_key(state, working)
    if disk_key is not None:
        with report_errors("keeping the head maps for the next start"):
            save_cached_maps(disk_key, maps)


NO_TARGET = ("Set a target on the Prune page ('By a size or FLOPs target') to see here, outlined in dashed orange, "
             "what it would remove.")


def neuron_map(scores: UnitScores, metric: str, plan: PruningPlan | None, target: str | None, key_prefix: str,
               columns: int = 3, selection: bool = False) -> None:
    """Neurons: the layer × percentile grid and a histogram per layer; `plan`'s neurons outlined / stacked in orange
    (Prune's target) or, with `selection`, in red (the session's neuron rule, described by `target`).

    The legend says which end goes first: the target ranks neurons by `BUDGET_METRICS['neuron']`, lowest first.
    """
    from sentinel.ui.budget import BUDGET_METRICS
    from sentinel.ui.unit_maps import (NEURON_METRICS, SELECTION_OUTLINE, TARGET_OUTLINE, going_by_layer,
                                       neuron_histogram_chart, neuron_histograms, neuron_percentiles,
                                       percentile_heatmap)

    label, legend = NEURON_METRICS[metric]
    ranked = BUDGET_METRICS["neuron"]
    outline = SELECTION_OUTLINE if selection else TARGET_OUTLINE
    st.altair_chart(percentile_heatmap(neuron_percentiles(scores, plan=plan), label, outline), width="stretch",
                    key=f"{key_prefix}_chart")
    order = (f"Prune's target ranks neurons by {NEURON_METRICS[ranked][0].lower()}: within each layer the lowest "
             "values (dark purple, the left of each row and of each histogram) go first." if metric == ranked else
             f"Prune's target ranks neurons by {NEURON_METRICS[ranked][0].lower()}, not by this metric, so the "
             "neurons it would remove can sit anywhere on this scale; the outlines show where they fall.")
    if selection:
        order = ("Your rule selects the lowest values of this metric in each chosen layer (dark purple, the left of "
                 "each row and of each histogram).")
    st.caption(f"{legend} Each row is a layer; each cell is the score below which that share of the layer's "
               f"active neurons fall, so a row's colours show how the layer's neurons spread. {order}")
    histograms = neuron_histograms(scores, plan, cut=selection or metric == ranked, goes=outline.fate)
    st.altair_chart(neuron_histogram_chart(histograms, label, columns, outline), width="content",
                    key=f"{key_prefix}_histograms")
    if plan is None:
        st.caption(f"Histograms: how each layer's active neurons spread over the scores (the same bins in every "
                   f"layer). {NO_TARGET}")
        return
    going = going_by_layer(plan, scores)
    bands = "; ".join(f"layer {r.layer}: {r.removed} of {r.active} ({r.share:.0%})"
                      for r in going.itertuples() if r.removed) or "none"
    if selection:
        st.caption(f"Solid red: the neurons your selection ({target}) takes — grid cells where most of the layer's "
                   "neurons at that percentile are selected, and the red part of each histogram. The dashed line is "
                   f"the cut: the highest score selected in that layer. Selected per layer: {bands}.")
        return
    cut = " The dashed line is the cut: the highest score the target removes in that layer." if metric == ranked else ""
    st.caption(f"Dashed orange: the neurons Prune's target ({target}) would remove — grid cells where most of the "
               f"layer's neurons at that percentile go, and the orange part of each histogram.{cut} Neurons removed "
               f"per layer: {bands}.")


def layer_map(scores: UnitScores, metric: str, plan: PruningPlan | None, target: str | None, key_prefix: str,
              selected: Iterable[int] | None = None) -> None:
    """Layers: bars per layer for the block and its attention and MLP parts; `plan`'s layers outlined in orange.

    With `selected` (the Maps page) the bars are clickable and the selected layers outlined in red; their clicks are
    read by `read_layer_clicks` before this is drawn."""
    from sentinel.ui.budget import BUDGET_METRICS
    from sentinel.ui.unit_maps import LAYER_METRICS, LAYER_SELECTION, layer_bars, layer_frame

    label, legend = LAYER_METRICS[metric]
    ranked = BUDGET_METRICS["layer"]
    frame = layer_frame(scores, plan.layers if plan is not None else None, selected or ())
    if selected is None:
        st.altair_chart(layer_bars(frame, label), width="stretch", key=f"{key_prefix}_chart")
    else:
        st.altair_chart(layer_bars(frame, label), width="stretch", key=f"{key_prefix}_chart", on_select="rerun",
                        selection_mode=[LAYER_SELECTION])
    order = (f"Prune's target ranks whole blocks by {LAYER_METRICS[ranked][0].lower()} (left panel): the lowest "
             "bars go first." if metric == ranked else f"Prune's target ranks whole blocks by "
             f"{LAYER_METRICS[ranked][0].lower()}, not by this metric.")
    clicks = (" Red band and outline: the layers you selected. Click a bar to select its layer; shift-click to add "
              "or drop more." if selected is not None else "")
    st.caption(f"{legend} Left to right: the whole block, its attention part, its MLP part. {order}{clicks}")
    if plan is None:
        st.caption(NO_TARGET)
        return
    gone = sorted(plan.layers)
    st.caption(f"Dashed orange, faded, marked ▼: the layers Prune's target ({target}) would remove — "
               + (", ".join(f"layer {layer} ({'+'.join(plan.layers[layer])})" for layer in gone) if gone
                  else "none; it removes heads or neurons only") + ".")


def read_layer_clicks(state: DashboardState, working: WorkingModel) -> None:
    """Fold the layer bars' last click into the session's layer selection (before the bars are drawn)."""
    from sentinel.ui.unit_maps import LAYER_SELECTION

    event = st.session_state.get(LAYER_CHART_KEY)
    if event is None:                 # the chart widget is new on this page view: no click yet
        state.units = forget_layer_clicks(state.units)
        return
    points = event["selection"].get(LAYER_SELECTION, [])
    state.units = apply_layer_event(state.units, points, working.base.layout.num_layers, selectable=working.blocks())


def layer_selection_list(state: DashboardState, working: WorkingModel) -> None:
    """The selected layers as an editable list (for keyboards; the same selection the bars and Prune use)."""
    from sentinel.pruning.units import active_neurons

    blocks = working.blocks()
    state.units = keep_present(state.units, blocks, active_neurons(working.model))   # another step may have taken some
    st.session_state[LAYERS_LIST_KEY] = list(state.units.layers)

    def edited() -> None:
        state.units = set_layers(state.units, st.session_state[LAYERS_LIST_KEY], selectable=blocks)

    st.multiselect("Selected layers", blocks, key=LAYERS_LIST_KEY, on_change=edited,
                   format_func=lambda layer: f"Layer {layer}",
                   placeholder="Click bars in the chart, or pick layers here",
                   help="Whole blocks, in the model's original numbering. 'By my selection' on Prune removes them.")


def layer_selection_link(state: DashboardState) -> None:
    """'Remove the N selected layers': opens Prune in 'By my selection' mode."""
    count = len(state.units.layers)
    if count and st.button(f"Remove the {count} selected layer{'s' if count != 1 else ''}",
                           key="remove_selected_layers", icon=":material/content_cut:",
                           help="Opens Prune in 'By my selection' mode with these layers (and any selected heads "
                                "and neurons)."):
        state.prune_selection_next = True
        st.switch_page("app_pages/prune.py")


def neuron_rule(state: DashboardState, working: WorkingModel, scores: UnitScores) -> PruningPlan | None:
    """The neuron rule's controls ('the lowest X% of the neurons by the metric shown, in these layers'): the neurons
    it picks become the session's neuron selection; returns them as a plan to outline (None: no rule)."""
    from sentinel.ui.unit_maps import NEURON_METRICS

    rule = state.units.rule
    if RULE_SHARE_KEY not in st.session_state:         # the page opened again: the controls show the session's rule
        st.session_state[RULE_SHARE_KEY] = rule.share if rule is not None else 0.0
        st.session_state[RULE_LAYERS_KEY] = list(rule.layers) if rule is not None else []
    label = NEURON_METRICS[scores.metric][0].lower()
    st.markdown(f"**Select neurons by rule:** the lowest share of each layer's neurons by {label} (the metric shown)")
    cols = st.columns([2, 3])
    share = cols[0].slider("Lowest share of each layer's neurons", 0.0, NEURON_RULE_MAX, step=0.05,
                           key=RULE_SHARE_KEY, format="%.2f",
                           help="Within each chosen layer, this share of its active neurons with the lowest scores "
                                "of the metric shown above. 0 selects none.")
    layers = cols[1].multiselect("In layers", list(range(scores.num_layers)), key=RULE_LAYERS_KEY,
                                 format_func=lambda layer: f"Layer {layer}", placeholder="Every layer")
    if share <= 0:
        state.units = set_neurons(state.units, {}, None)
        keep_url(state)
        return None
    chosen = NeuronRule(scores.metric, float(share), tuple(sorted(layers)))
    state.units = set_neurons(state.units, neurons_by_rule(scores, chosen), chosen)
    keep_url(state)
    return PruningPlan(neurons=state.units.neuron_plan())


def neuron_selection_link(state: DashboardState) -> None:
    """'Remove these N neurons': opens Prune in 'By my selection' mode."""
    count = state.units.neuron_count()
    if count and st.button(f"Remove these {count:,} neurons", key="remove_selected_neurons",
                           icon=":material/content_cut:",
                           help="Opens Prune in 'By my selection' mode with these neurons (and any selected heads "
                                "and layers)."):
        state.prune_selection_next = True
        st.switch_page("app_pages/prune.py")


def unit_selection_list(state: DashboardState, working: WorkingModel) -> None:
    """On Prune's 'By my selection': the selected layers (editable) and neurons (counted per layer) beside the
    heads' list."""
    dropped = selection_note(state, working)
    if dropped:
        st.info(dropped, icon=":material/filter_alt_off:")
    layer_selection_list(state, working)
    count = state.units.neuron_count()
    if not count:
        st.caption("Neurons: none selected (select them by a rule on Maps → MLP neurons).")
        return
    per_layer = ", ".join(f"layer {layer}: {len(units)}" for layer, units in sorted(state.units.neurons.items()))
    rule = f" — {state.units.rule.describe()}" if state.units.rule is not None else ""
    cols = st.columns([4, 1])
    cols[0].markdown(f"**Selected neurons:** {count:,}{rule} ({per_layer}).")
    if cols[1].button("Clear", key="clear_selected_neurons", icon=":material/close:",
                      help="Drop the neuron selection (set a new rule on Maps → MLP neurons)."):
        state.units = set_neurons(state.units, {}, None)
        st.rerun()


EXAMPLES_SHOWN = 3


def prompt_input(label: str, key: str, working: WorkingModel, area: bool = False) -> str:
    """A prompt box that starts with a prompt fitting the session's model, with example prompts to click: a
    stdlib-gpt2 session gets docstring openings, the stories model story openings. A prompt the user typed is
    kept across pages; one of the examples (untouched) follows the model when another is loaded."""
    from sentinel.demo.prompts import PROMPTS, prompts_for_source

    kept = f"{key}_kept"         # not a widget's key: Streamlit drops those when their page is not shown
    examples = prompts_for_source(working.base.source)
    every_example = {p for prompts in PROMPTS.values() for p in prompts}
    current = st.session_state.get(kept)
    if current is None or (current in every_example and current not in examples):
        current = st.session_state[kept] = examples[0]
    st.session_state[key] = current

    def use_example() -> None:
        chosen = st.session_state.get(f"{key}_example")
        if chosen:
            st.session_state[kept] = st.session_state[key] = chosen

    def keep_typed() -> None:
        st.session_state[kept] = st.session_state[key]

    st.pills("Example prompts", examples[:EXAMPLES_SHOWN], key=f"{key}_example", on_change=use_example,
             help="Prompts that fit the loaded model's own text; click one to use it.")
    if area:
        return st.text_area(label, key=key, height=80, on_change=keep_typed)
    return st.text_input(label, key=key, on_change=keep_typed)
