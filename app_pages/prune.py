"""Prune page: switch heads off by strategy + ratio or by the selected heads, or remove heads, neurons and layers to
meet a size, FLOPs or speed-up target (with recovery); see the prediction first and the measured effect
after; undo, save."""

import tempfile
from pathlib import Path

import streamlit as st

from sentinel.models import save_model
from sentinel.pruning.strategies import strategy_names
from sentinel.pruning.plan import plan_to_pairs
from sentinel.ui.budget import (BUDGET_METRICS, RECOVERY_CHOICES, RECOVERY_LABELS, UNIT_KINDS, BudgetSettings,
                                falls_short, needs_text, per_layer_counts, prediction_table, speed_against_target)
from sentinel.ui.analysis import ON_REQUEST, before_after_table, heads_share
from sentinel.charts import METRICS, layer_counts_chart, strategy_chart
from sentinel.ui.protocol import EVAL_PROTOCOL
from sentinel.evaluation.paired import SPEED_REPEATS, SpeedComparison
from sentinel.ui.strategies import CompareRequest, Comparison, start_comparison
from sentinel.ui.format import job_failure, plural, word_diff_html
from sentinel.ui.export import DASHBOARD_FORMATS, GGUF_QUANTS, export_blocker, export_session
from sentinel.files import visitor_name
from sentinel.ui.library import EXPORTS_FOLDER, MODELS_FOLDER, export_folder_for, model_folder_for, zip_folder
from sentinel.ui.pruning import (PruneSettings, choose_by_selection, just_applied, mark_applied, metrics_for,
                                 preview_or_note)
from sentinel.ui.selection import HeadSelection, UnitSelection, selection_plan
from sentinel.ui.session import made_before
from app_support.state import (base_figures, budget_prediction, cached_speed, current_figures, current_maps,
                               dashboard, forget_budget_preview, keep_selection, last_budget_preview, notify,
                               quick_sample, report_errors, require_model, shared_jobs, shared_store, show_notices,
                               speed_comparison, strategy_scores)
from app_support.target_prune import APPLIED_TARGET, prune_to_target, recovery_panel, recovery_pending
from sentinel.ui.target_prune import recovery_figures
from app_support.widgets import head_map, layer_map, neuron_map, prompt_input, selection_list, unit_selection_list
from app_support.progress import job_progress

state = dashboard()
st.title(":material/content_cut: Prune")
st.caption("Switch off attention heads, MLP neurons or whole layers and see what it does. Masking is reversible "
           "and keeps the weights; removal cuts the units out of the weights, so the model gets smaller. Whether it "
           "also gets faster is measured after each removal: often the difference is within the timing noise.")
working = require_model(state)
show_notices(state)
layout = working.base.layout

if state.prune_selection_next:            # arrived from "Prune the N selected heads" (or layers, or neurons)
    st.session_state["prune_how"] = "selection"
    state.prune_selection_next = False

left, right = st.columns([3, 2], gap="large")
with right:
    how = st.radio("Choose what to prune", ["strategy", "selection", "target"], horizontal=True, key="prune_how",
                   format_func={"strategy": "Heads by strategy and ratio", "selection": "By my selection",
                                "target": "By a size or FLOPs target"}.get)
    units_only_removed = how == "selection" and not state.units.is_empty()    # neurons and layers: removal only
    mode = "remove" if how == "target" or units_only_removed else st.radio(
                    "How to prune", ["mask", "remove"], horizontal=True, key="prune_mode",
                    format_func={"mask": "Mask (reversible)", "remove": "Remove (smaller; speed measured after)"}.get,
                    help="Masking multiplies a head's output by 0. Removal deletes its weights"
                         + (f"; this model shares K/V heads in groups of {layout.kv_group_size}, so removal "
                            "takes whole groups." if layout.kv_group_size > 1 else "."))
    if units_only_removed:
        st.caption("Your selection has MLP neurons or whole layers: they are removed from the weights (no masking "
                   "here), with any selected heads.")
    if how == "target":
        st.caption("A target removes units from the weights (heads, MLP neurons or whole layers), ranked by weight "
                   "magnitude (layers by block influence on the sample text), so the model gets smaller.")
    min_heads = st.number_input("Keep at least this many heads per layer (min_heads)", 0, layout.num_heads, 1,
                                key="prune_min_heads")
    if how == "strategy":
        names = strategy_names()
        strategy = st.selectbox("Strategy", names, index=names.index("entropy") if "entropy" in names else 0,
                                key="prune_strategy",
                                help="entropy: the most diffuse heads first; magnitude: the smallest weights; "
                                     "gradient: those the loss reacts to least; hybrid: a mix of entropy and "
                                     "magnitude ranks; loss_impact: those whose loss rises least when switched off "
                                     "alone (compute it on Maps first); random: a seeded draw.")
        ratio = st.slider("Share of the active heads to prune", 0.0, 0.9, 0.3, 0.05, key="prune_ratio",
                          format="%.2f")
        cols = st.columns(2)
        scope = cols[0].radio("Ranking", ["global", "per_layer"], key="prune_scope",
                              format_func={"global": "Whole model", "per_layer": "Within each layer"}.get)
        seed = cols[1].number_input("Seed", 0, 2**31 - 1, 0, key="prune_seed")
    elif how == "target":
        units = st.multiselect("Unit kinds", list(UNIT_KINDS), ["heads", "neurons"], key="budget_units",
                               help="heads: attention heads; neurons: MLP hidden units; layers: whole blocks.")
        cols = st.columns(2)
        measure = cols[0].radio("Target", ["params", "flops", "speedup"], key="budget_measure",
                                format_func={"params": "Share of prunable parameters",
                                             "flops": "Share of the body's FLOPs",
                                             "speedup": "Speed-up (predicted from FLOPs)"}.get)
        if measure == "speedup":
            share_wanted = cols[1].slider("Speed-up wanted", 1.1, 4.0, 1.5, 0.1, key="budget_speedup", format="%.1f×",
                                          help="Predicted from the body's FLOPs: removes 1 − 1/X of them. The speed "
                                               "measured after pruning is shown beside it.")
        else:
            share_wanted = cols[1].slider("Share to remove", 0.05, 0.9, 0.3, 0.05, key="budget_share", format="%.2f")
        cols = st.columns(2)
        allocation = cols[0].radio("Allocation", ["global", "uniform"], key="budget_allocation",
                                   format_func={"global": "Global ranking", "uniform": "Same count per layer"}.get)
        recovery = cols[1].radio("Recovery", list(RECOVERY_CHOICES), key="budget_recovery",
                                 format_func=RECOVERY_LABELS.get,
                                 help="After removal, re-fit each changed output projection on 32 blocks of the "
                                      "bundled training text so it reproduces the unpruned layer's output. Runs in "
                                      "the background (progress and cancel below the Prune button).")
        budget = BudgetSettings(tuple(units), measure, float(share_wanted), allocation, recovery, int(min_heads))
    else:
        selection_list(state, working)
        unit_selection_list(state, working)
    preview: tuple[dict, str] | None = None       # (plan, label) pressing Prune would apply now
    total = layout.num_layers * layout.num_heads
    if how == "strategy":
        state.prune_settings = PruneSettings(strategy, float(ratio), int(min_heads), scope, int(seed), mode)
        done_note = None            # the settings were just applied and cannot be applied once more
        with report_errors("previewing the strategy's choice") as no_preview:
            scores = strategy_scores(state, working, strategy)
            preview, done_note = preview_or_note(working, scores, state.prune_settings, layout.kv_group_size,
                                                 just_applied(state.caches, working, state.prune_settings))
        if done_note is not None:
            st.info(done_note, icon=":material/check_circle:")
        if preview is not None:
            count = sum(len(h) for h in preview[0].values())
            st.caption(f"Preview (dashed orange on the map): {heads_share(count, total)} of the model, "
                       f"{count} of the {len(working.active())} active heads.")
    predicted = None
    if how == "target":
        with report_errors("predicting what the target removes"):
            if needs_text(budget.units) and state.text.kind != "bundled":
                st.caption(f"Layers are scored on {state.text.name}.")
            predicted = budget_prediction(state, working, budget)
        if predicted is not None:
            going = ", ".join(f"{n:,} {k}" for k, n in predicted.counts.items() if n) or "nothing"
            st.markdown(f"**Pressing Prune would remove** {going}:")
            st.table(prediction_table(predicted))
            if predicted.reason:
                st.caption(f"Not exact: {predicted.reason}.")
            if budget.measure == "speedup":
                st.caption(f"A {budget.share:g}× speed-up is predicted from the body's FLOPs: it removes "
                           f"1 − 1/{budget.share:g} = {1 - 1 / budget.share:.1%} of them. That is not a timing; "
                           "after Prune the page times both models and shows the measured speed-up beside it.")
            counts = per_layer_counts(predicted.plan, layout.num_layers)
            if not counts.empty:
                st.altair_chart(layer_counts_chart(counts), width="stretch", key="budget_counts_chart")
            preview = (predicted.plan.heads, budget.label())
    else:
        forget_budget_preview(state)              # the maps stop outlining a target this mode does not use
    waiting = how == "target" and recovery_pending(state)   # one target prune with recovery at a time
    go = st.button("Prune", type="primary", key="prune_go", icon=":material/content_cut:", disabled=(
        how in ("strategy", "target") and preview is None) or waiting,
                   help="Wait for the target prune running below, or cancel it." if waiting else
                   "These settings were just applied: lower the ratio to prune further." if how == "strategy"
                   and done_note is not None else None)
    cols = st.columns(2)
    undo = cols[0].button("Undo", key="prune_undo", icon=":material/undo:", disabled=not working.steps,
                          help="Take back the last pruning step.", width="stretch")
    reset = cols[1].button("Reset", key="prune_reset", icon=":material/restart_alt:", disabled=not working.steps,
                           help="Back to the model as loaded.", width="stretch")

if go:
    with report_errors("pruning"):
        if how == "target":
            step = prune_to_target(state, working, budget, predicted)   # None: recovery runs as a job
            if step is None:
                st.rerun()
            state.caches[APPLIED_TARGET] = (id(working), working.version, budget, predicted)
        elif how == "strategy":
            plan, label = preview                 # exactly the heads the preview outlined
            step = working.apply(plan, mode, label, strategy, ratio)
            mark_applied(state.caches, working, state.prune_settings)
        else:
            plan, label = choose_by_selection(working, selection_plan(state.selection, state.units), int(min_heads))
            step = working.apply(plan, mode, label)
        if how == "selection":                    # the selection was pruned: used up
            state.selection = HeadSelection((), state.selection.seen)
            state.units = UnitSelection()
        else:                                     # kept, but for what this step took (said so)
            keep_selection(state, working)
        notify(state, f"{'Masked' if mode == 'mask' else 'Removed'} {step.describe()} ({step.how})")
        st.rerun()
if undo:
    with report_errors("undoing the last step"):
        step = working.undo()
        notify(state, f"Undid: {step.mode} {step.describe()} ({step.how})")
        st.rerun()
if reset:
    working.reset()
    notify(state, "Back to the base model")
    st.rerun()
with right:
    recovery_panel(state, working)      # the target prune's background job: progress, cancel, adoption

with left:
    # the map shows what the chosen strategy ranks by, so the preview's outlines match the colours
    ranked_by = metrics_for(strategy) if how == "strategy" else ("magnitude",) if how == "target" else ()
    if len(ranked_by) == 1 and ranked_by[0] in METRICS and (ranked_by[0] not in ON_REQUEST or preview is not None):
        metric = ranked_by[0]
    else:
        metric = state.map_metric if state.map_metric not in ON_REQUEST else "entropy_normalized"
    maps = current_maps(state, working, [metric])
    if maps is not None:
        head_map(state, working, maps.scores[metric], metric, chart_key="prune_map_chart",
                 title=f"{METRICS[metric].label} — your model now",
                 preview=plan_to_pairs(preview[0]) if preview else ())
    target_preview = last_budget_preview(state, working) if predicted is not None else None
    if target_preview is not None:      # the target's neurons and layers, on the scores it ranked them by
        if "neuron" in target_preview.scores:
            st.markdown("**MLP neurons** — what the target ranks them by")
            neuron_map(target_preview.scores["neuron"], BUDGET_METRICS["neuron"], predicted.plan, budget.label(),
                       key_prefix="prune_neuron_map", columns=2)
        if "layer" in target_preview.scores:
            st.markdown("**Layers** — what the target ranks them by")
            layer_map(target_preview.scores["layer"], BUDGET_METRICS["layer"], predicted.plan, budget.label(),
                      key_prefix="prune_layer_map")

st.subheader("Quick sample")
prompt = prompt_input("Prompt", "prune_prompt", working)
with report_errors("generating the quick sample"):
    base_text = quick_sample(state, working, prompt, tuned=False)
    now_text = quick_sample(state, working, prompt, tuned=True)
    cols = st.columns(2)
    cols[0].markdown("**Before** (base model, greedy)")
    cols[0].html(f"<div class='sample' id='sample-before'>{word_diff_html(base_text, base_text)}</div>")
    cols[1].markdown("**After** (your model, greedy; changed words highlighted)")
    cols[1].html(f"<div class='sample' id='sample-after' data-version='{working.version}'>"
                 f"{word_diff_html(base_text, now_text)}</div>")

st.subheader("Before and after")
before, after = base_figures(state, working), current_figures(state, working)
figures_slot = st.empty()       # drawn now; the measured speed fills in at the end of the page's run


def draw_figures(speed: SpeedComparison | None, timing: bool) -> None:
    """The before/after table (speed rows marked 'timing' until the paired timing has run) and, after a speed-up
    target, that target beside its predictions and the measured speed."""
    recovered = recovery_figures(shared_store(), working)
    table = before_after_table(before, after, speed, recovered)
    if timing:
        for row in ("Prefill speed measured", "Generation speed measured"):
            table.loc[row] = ["1.00×", f"timing the two models in turns ({SPEED_REPEATS} pairs)…", ""]
    with figures_slot.container():
        st.table(table)
        applied = state.caches.get(APPLIED_TARGET)
        if speed is not None and applied is not None and applied[:2] == (id(working), working.version) \
                and applied[2].measure == "speedup":
            wanted = applied[2].share
            st.markdown(f"**Speed-up target {wanted:g}×: predicted and measured**")
            st.table(speed_against_target(wanted, applied[3], speed))
            if len(working.steps) > 1:
                st.caption(f"The target and its prediction are against the model before this step; the measured "
                           f"speed is against the model as loaded ({len(working.steps) - 1} earlier steps included).")
            short = falls_short(wanted, speed)
            if short:
                st.warning(f"The measured {' and '.join(short)} speed-up falls short of the {wanted:g}× target (see "
                           "the table: below it, or not measurably faster than the base model). The target was "
                           "predicted from the body's FLOPs; the embeddings, the LM head, memory traffic and per-layer "
                           "overheads do not shrink with them. Raise the target (or remove whole layers) to get "
                           "closer.", icon=":material/speed:")
        spread = (f" Perplexity spread (bootstrap over windows): before {before.perplexity_interval or 'n/a'}, after "
                  f"{after.perplexity_interval or 'n/a'}." if before.perplexity_interval or after.perplexity_interval
                  else "")
        bought = (" The rows of a step with recovery show what removing its units cost and what re-fitting the "
                  "weights bought back, measured the same way by its background job." if recovered else "")
        st.caption(f"Before = the model as loaded; after = your copy with {plural(len(working.steps), 'pruning step')}. "
                   f"Perplexity: {after.perplexity_note}, the same on every page.{spread}{bought} Speed: the two "
                   "models timed in turns on this machine, shown as after ÷ before with the range over the pairs; when that range "
                   "includes 1.00× the difference is within the noise. The predicted speed-up here counts the whole "
                   "model's FLOPs, LM head included (pruning does not shrink it), so it is lower than the body-only "
                   "prediction shown before Prune. Masking multiplies a head's output by 0 but "
                   "still computes it, so only removal can make the model faster. After each step the timing runs "
                   "last, once the rest of the page is drawn, and its rows fill in when it is done.")


figures_shown = before is not None and after is not None
removed_any = any(step.mode == "remove" for step in working.steps)      # masks alone are not timed (instant)
speed_now = cached_speed(state, working) if removed_any else speed_comparison(state, working) if working.steps \
    else None
timing_pending = removed_any and speed_now is None
if figures_shown:
    draw_figures(speed_now, timing_pending)


st.subheader("Which strategy hurts least on this model?")
compare_share = ratio if how == "strategy" else 0.3
st.caption(f"Masks {compare_share:.0%} of the active heads with every strategy (random with 3 seeds) on copies of "
           f"your model and measures each with the app's protocol ({EVAL_PROTOCOL.describe()}). Runs in the "
           "background; the result is also recorded on the Experiments page.")
if st.button("Compare strategies", key="compare_strategies", icon=":material/leaderboard:"):
    with report_errors("starting the strategy comparison"):
        request = CompareRequest(ratio=float(compare_share), min_heads=int(min_heads),
                                 scope=scope if how == "strategy" else "global")
        device = state.choice.device if state.choice else "auto"
        state.compare_job_id = start_comparison(shared_jobs(), shared_store(), working, request, device)


if state.compare_job_id is not None:
    with report_errors("reading the strategy comparison") as failed:
        compare_job = shared_store().get_job(state.compare_job_id)
    if not failed:
        if compare_job.state in ("queued", "running"):
            job_progress(compare_job.id, "Comparing strategies", "compare_strategies_cancel",
                         "Stop the comparison; your model is not touched (the strategies run on a copy).")
        elif compare_job.state == "succeeded":
            comparison = Comparison.from_dict(compare_job.result["comparison"])
            ranked = comparison.table()
            older = made_before(shared_store().get_experiment(compare_job.experiment_id).config, working,
                                "This strategy comparison")
            if older is not None:        # more pruning since: the ranking is of that earlier model, not this one
                st.warning(older + " Press **Compare strategies** again to rank them on your model as it is now.",
                           icon=":material/history:")
            st.markdown(comparison.recommendation())
            cols = st.columns([3, 2])
            cols[0].dataframe(ranked, hide_index=True, key="compare_strategies_table", width="stretch")
            cols[1].altair_chart(strategy_chart(ranked, comparison.baseline), width="stretch")
        elif compare_job.state == "cancelled":
            st.info("The strategy comparison was cancelled; press Compare strategies to run it again.",
                    icon=":material/cancel:")
        else:
            st.warning(f"The strategy comparison {compare_job.state}: {job_failure(compare_job)}",
                       icon=":material/warning:")

if working.steps:
    st.dataframe([{"step": i + 1, "mode": s.mode, "how": s.how, "units": s.describe(),
                   "recovery": s.recovery or "none",
                   "heads": ", ".join(f"L{l}:{h}" for l, h in sorted(s.heads.items()))}
                  for i, s in enumerate(working.steps)], hide_index=True)

st.subheader("Save")
name = st.text_input("Name", f"{Path(working.base.source).name}-pruned", key="save_name",
                     help=f"Saved in the data folder's {MODELS_FOLDER}/ folder; load it again on the Model page.")
with report_errors("checking the name") as bad_name:
    target = model_folder_for(name)
if not bad_name:
    note = {"source": working.base.source, "steps": working.history()}
    replace_ok = True
    if target.exists():   # ask before replacing: never silently overwrite a saved model
        st.warning(f"A model named {target.name!r} is already saved. Saving again replaces it.",
                   icon=":material/warning:")
        replace_ok = st.checkbox(f"Replace the saved model {target.name!r}", key="save_replace")
    cols = st.columns(2)
    if cols[0].button("Save to the data folder", key="save_go", icon=":material/save:", disabled=not replace_ok):
        with report_errors("saving the model"):
            folder = save_model(working.model, working.tokenizer, target, note=note)
            st.success(f"Saved as {visitor_name(folder)}. Load it on the Model page under 'Saved pruned model'.",
                       icon=":material/check_circle:")

    def zipped() -> bytes:
        """The model saved into a temporary folder and zipped, only when the download is clicked."""
        with tempfile.TemporaryDirectory() as tmp:
            return zip_folder(save_model(working.model, working.tokenizer, Path(tmp) / target.name, note=note))

    cols[1].download_button("Download as zip", zipped, file_name=f"{target.name}.zip", mime="application/zip",
                            key="save_zip", icon=":material/download:", on_click="ignore")

st.subheader("Export")
export_fmt = st.radio("Format", list(DASHBOARD_FORMATS), format_func=DASHBOARD_FORMATS.get, horizontal=True,
                      key="export_format")
quant = "f16"
if export_fmt == "hf":
    st.caption("Writes a stock Hugging Face checkpoint that loads without Sentinel, when the pruned shapes fit the "
               "family's config (for GPT-2, OPT, GPT-NeoX, GPT-J, Phi and Falcon: a uniform MLP width and whole "
               "layers, not removed heads); checked by reloading it with plain transformers.")
elif export_fmt == "gguf":
    quant = st.selectbox("Weights", GGUF_QUANTS, key="export_quant",
                         help="f16 halves the file; q8_0 is llama.cpp's 8-bit quantisation; f32 is exact.")
    st.caption("One model.gguf file for llama.cpp (and Ollama, LM Studio): Llama, Mistral and Qwen2 models with "
               "different heads, K/V heads and MLP widths per layer, removed parts and blocks; GPT-2 with uniform "
               "shapes. Read back after writing.")
else:
    st.caption("ONNX graphs for ONNX Runtime (prefill, and with the KV cache for generation), any per-layer "
               "shapes; checked by running them in ONNX Runtime against your model.")
st.caption(f"Saved in the data folder's {EXPORTS_FOLDER}/ folder; download it as a zip below.")
export_name = st.text_input("Export name", f"{Path(working.base.source).name}-{export_fmt}", key="export_name")
with report_errors("checking the export name") as bad_export_name:
    export_target = export_folder_for(export_name)
export_key = ("export", id(working), working.version, export_name, export_fmt, quant)
blocked: str | None = "Export is off until the check above succeeds."
with report_errors("checking whether the model can be exported"):
    blocked = export_blocker(working, state.caches, export_fmt)     # checked on a copy: nothing is written
if blocked:
    st.info(blocked, icon=":material/block:")
export_ok = not blocked
if export_ok and not bad_export_name and export_target.exists():   # ask before replacing, as Save does
    st.warning(f"An export named {export_target.name!r} already exists. Exporting again replaces it.",
               icon=":material/warning:")
    export_ok = st.checkbox(f"Replace the export {export_target.name!r}", key="export_replace")
if not bad_export_name and st.button("Export", key="export_go", icon=":material/output:", disabled=not export_ok,
                                    help=blocked):
    with report_errors("exporting the model"), st.spinner("Exporting and checking it in its runtime…"):
        state.caches[export_key] = export_session(working, export_name, export_fmt, quant)
exported = state.caches.get(export_key)
if exported is not None:
    st.success(f"Exported as {visitor_name(exported.path)}: {exported.checked}.", icon=":material/check_circle:")
    st.markdown("Load it (after unzipping) with:")
    st.code(exported.load, language="python")
    st.download_button("Download the export as zip", lambda: zip_folder(Path(exported.path)),
                       file_name=f"{Path(exported.path).name}.zip", mime="application/zip", key="export_zip",
                       icon=":material/download:", on_click="ignore")


if timing_pending and figures_shown:        # last, so the maps, sample and figures above are already on screen
    draw_figures(speed_comparison(state, working), False)
