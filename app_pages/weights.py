"""Weights page: weight-level sparsity on a copy of the session's model (one-shot or gradual); per-layer sparsity,
sizes, perplexity, int8, speed, saving the copy, and the layer-sensitivity scan in the background."""

import json
from dataclasses import replace
from pathlib import Path

import streamlit as st

from app_support.compare import SPARSE_KEY
from app_support.state import (current_figures, dashboard, keep_url, report_errors, require_model, shared_jobs,
                               shared_store, show_notices)
from app_support.progress import job_progress
from sentinel.evaluation.paired import SPEED_REPEATS, InterleavedSpeed
from sentinel.sparsity.masks import (ROW_ONLY_METHODS, SPARSEGPT_COLUMN_BLOCK, SPARSEGPT_DAMPENING, SparsityConfig,
                                     scopes_for)
from sentinel.sparsity.schedule import MASK_ONLY_METHODS
from sentinel.sparsity.scores import DATA_METHODS, METHODS
from sentinel.sparsity.sensitivity import SUGGESTED_AVERAGE, sensitivity_lines
from sentinel.sparsity.storage import size_report
from sentinel.ui.format import job_failure
from sentinel.ui.history import readable
from sentinel.files import visitor_name
from sentinel.ui.library import MODELS_FOLDER
from sentinel.ui.protocol import EVAL_PROTOCOL, protocol_perplexity
from sentinel.ui.session import made_before
from sentinel.ui.weights import (PAGE_SCHEDULES, ScheduleSettings, existing_targets, gradual_ran_on, gradual_result,
                                 gradual_settings, int8_speed_sentence, layer_sparsity_frame, quantize_copy,
                                 record_sparsify, save_sparse, schedule_frame, size_table, sparse_speed_job_for,
                                 sparse_speed_signature, sparsegpt_settings, sparsify_copy, speed_sentence,
                                 start_gradual_sparsify, start_sparse_speed)
from sentinel.ui.weights_sensitivity import SensitivityRequest, sensitivity_of, sensitivity_table, start_sensitivity

SPEED_JOB = "weights-speed-job"      # state.caches: this session's latest speed job id

state = dashboard()
st.title(":material/blur_on: Weights")
st.caption("Zero individual weights instead of whole units (the guide's weight-level methods), on a copy of your "
           "model as it is now. The copy lives in this browser session until you save it; your pruning steps are "
           "not changed.")
working = require_model(state)
show_notices(state)

gradual_job = None                   # the latest gradual run (a background job: it fine-tunes)
if state.gradual_job_id is not None:
    with report_errors("reading the gradual run"):
        gradual_job = shared_store().get_job(state.gradual_job_id)
fresh_gradual = (gradual_job is not None and gradual_job.state == "succeeded"
                 and ("gradual-shown", gradual_job.id) not in state.caches)
if fresh_gradual:                    # show the run with its own settings (also after a reload)
    done_config, done_schedule = gradual_settings(gradual_job.params)
    st.session_state.update(weights_method=done_config.method, weights_pattern="unstructured",
                            weights_sparsity=done_config.sparsity, weights_scope=done_config.scope,
                            weights_schedule="gradual", weights_steps=done_schedule.steps)

cols = st.columns(4)
method = cols[0].selectbox("Method", METHODS, index=METHODS.index("wanda"), key="weights_method",
                           help="l1/l2: smallest weights (magnitude); random; gradient/snip: loss sensitivity; "
                                "wanda: |weight| × input norm. " + ", ".join(DATA_METHODS) + " calibrate on 16 "
                                "blocks of the bundled training text.")
pattern = cols[1].radio("Pattern", ["unstructured", "2:4"], key="weights_pattern",
                        help="2:4 keeps 2 of every 4 weights along the input (50%), the pattern sparse tensor "
                             "cores accelerate.")
sparsity = cols[2].slider("Sparsity", 0.0, 0.9, 0.5, 0.05, key="weights_sparsity", format="%.2f",
                          disabled=pattern == "2:4")
scopes = scopes_for(method)
if st.session_state.get("weights_scope", scopes[0]) not in scopes:
    st.session_state["weights_scope"] = scopes[0]        # e.g. global chosen, then SparseGPT: never offer what fails
scope = cols[3].radio("Scope", scopes, key="weights_scope", disabled=pattern == "2:4",
                      help="layer: the same share in every matrix; global: one ranking over all; row: per output "
                           "row (Wanda's comparison group).")
if method in ROW_ONLY_METHODS:
    cols[3].caption("SparseGPT prunes every row to the share, so it has no global ranking.")
cols = st.columns(4)
schedule_kind = cols[0].radio("Schedule", PAGE_SCHEDULES, key="weights_schedule", horizontal=True,
                              format_func={"oneshot": "One-shot", "gradual": "Gradual"}.get,
                              help="One-shot: mask once. Gradual (Zhu & Gupta): fine-tune on the bundled training "
                                   "text while the share of zeros ramps up on a cubic curve to the target "
                                   f"(reached at 75% of the steps; masks every steps/10; {', '.join(MASK_ONLY_METHODS)}"
                                   " only). Lottery tickets: `sentinel sparsify --schedule lottery`.")
steps = cols[1].number_input("Training steps", 2, 500, 20, key="weights_steps", disabled=schedule_kind == "oneshot",
                             help="Gradual only: fine-tuning steps of 4 sequences × 64 tokens, in the background.")
dampening, column_block = SPARSEGPT_DAMPENING, SPARSEGPT_COLUMN_BLOCK
if method == "sparsegpt":                # its two settings, shown only for it
    dampening = cols[2].number_input("Dampening", 0.0001, 1.0, SPARSEGPT_DAMPENING, 0.005, format="%.4f",
                                     key="weights_dampening",
                                     help="SparseGPT adds this share of the calibration Hessian's mean diagonal to "
                                          f"its diagonal before inverting it (default {SPARSEGPT_DAMPENING:g}); "
                                          "raise it if the Hessian is reported not invertible.")
    column_block = cols[3].number_input("Column block", 1, 4096, SPARSEGPT_COLUMN_BLOCK, 32,
                                        key="weights_column_block",
                                        help="Columns SparseGPT prunes together before it updates the rest of the "
                                             f"row (default {SPARSEGPT_COLUMN_BLOCK}); a multiple of 4 for 2:4.")
config = SparsityConfig(method, float(sparsity), "layer" if pattern == "2:4" else scope,
                        None if pattern == "unstructured" else pattern, dampening=float(dampening),
                        column_block=int(column_block))
schedule = ScheduleSettings(schedule_kind, int(steps))
key = ("sparse", id(working), working.version, json.dumps(config.to_dict(), sort_keys=True),
       json.dumps(schedule.to_dict(), sort_keys=True))
if st.button("Sparsify a copy", type="primary", key="weights_go", icon=":material/blur_on:",
             help="One-shot runs here; a gradual run fine-tunes, so it runs in the background (progress, cancel)."):
    if schedule.kind == "oneshot":
        with report_errors("sparsifying"), st.spinner("Scoring and masking the weights…"):
            state.caches[SPARSE_KEY] = (key, sparsify_copy(working.model, working.tokenizer, config, schedule))
    else:
        with report_errors("starting the gradual run"):
            device = state.choice.device if state.choice else "auto"
            state.gradual_job_id = start_gradual_sparsify(shared_jobs(), working, config, schedule, device)
            gradual_job = shared_store().get_job(state.gradual_job_id)
            keep_url(state)


if gradual_job is not None:
    if gradual_job.state in ("queued", "running"):
        job_progress(gradual_job.id, "Gradual pruning", "weights_gradual_cancel", cancel_label="Cancel the gradual run",
                     describe=lambda event: f"step {event.step} of {event.total_steps}" if event.total_steps
                     else "loading the model")
    elif gradual_job.state != "succeeded":
        st.warning(f"The gradual run {gradual_job.state}: {job_failure(gradual_job)}",
                   icon=":material/warning:")
    elif fresh_gradual:
        state.caches[("gradual-shown", gradual_job.id)] = True
        if gradual_ran_on(gradual_job.params, working):
            with report_errors("loading the gradual run's model"), st.spinner("Loading the sparse copy…"):
                device = str(next(working.model.parameters()).device)
                state.caches[SPARSE_KEY] = (key, gradual_result(gradual_job.result, config, schedule, device))
        else:
            st.info("The gradual run finished on your model as it was before your latest change (another model "
                    "or pruning step); sparsify again to see it on the model as it is now.")
latest = state.caches.get(SPARSE_KEY)
sparse = latest[1] if latest is not None and latest[0] == key else None
if sparse is None:
    st.info("Press **Sparsify a copy** to see what these settings do.")
else:
    stats = sparse.result.stats
    st.markdown(f"**{stats.sparsity:.1%}** of the targeted weights are zero ({stats.target_zeros:,} of "
                f"{stats.target_size:,}), {sparse.result.seconds:.1f} s "
                f"{'of scoring' if sparse.schedule.kind == 'oneshot' else 'of gradual pruning and training'}.")
    settings_line = sparsegpt_settings(sparse.result.config.to_dict())
    if settings_line is not None:
        st.caption(settings_line)
    cols = st.columns([3, 2]) if sparse.history else [st.container()]
    cols[0].bar_chart(layer_sparsity_frame(sparse.result), x="layer", y="sparsity", color="matrix", stack=False,
                      x_label="Layer", y_label="Share of zero weights")
    if sparse.history:
        cols[1].line_chart(schedule_frame(sparse.history), x="step", y="sparsity", color="which",
                           x_label="Training step", y_label="Share of zero weights")
    int8_on = st.toggle("Then quantize to int8", key="weights_int8",
                        help="Prune, then quantize: int8 dynamic quantization (torch.ao, CPU) of the sparse copy's "
                             "body matrices; zeros stay zeros. Adds the int8 file size and its perplexity.")
    with report_errors("measuring sizes and perplexity"):
        if int8_on and ("int8", key) not in state.caches:
            with st.spinner("Quantizing the sparse copy to int8…"):
                state.caches[("int8", key)] = quantize_copy(sparse.model, working.tokenizer)
        quantized = state.caches.get(("int8", key)) if int8_on else None
        if ("size", id(working), working.version) not in state.caches:
            state.caches[("size", id(working), working.version)] = size_report(working.model)
        if ("size-sparse", key) not in state.caches:
            state.caches[("size-sparse", key)] = size_report(sparse.model)
        dense_size = state.caches[("size", id(working), working.version)]
        sparse_size = state.caches[("size-sparse", key)]
        if quantized is not None:
            sparse_size = replace(sparse_size, int8_bytes=quantized.file_bytes)
        st.table(size_table(dense_size, sparse_size))
        now = current_figures(state, working)
        if ("ppl-sparse", key) not in state.caches:
            state.caches[("ppl-sparse", key)] = protocol_perplexity(sparse.model, working.tokenizer)
        ppl = state.caches[("ppl-sparse", key)]
        if quantized is not None and ("ppl-int8", key) not in state.caches:
            state.caches[("ppl-int8", key)] = protocol_perplexity(quantized.model, working.tokenizer)
        int8_ppl = state.caches.get(("ppl-int8", key)) if quantized is not None else None
        if now is not None:
            line = f"Perplexity: your model **{readable(now.perplexity)}**, sparse copy **{readable(ppl.perplexity)}**"
            if int8_ppl is not None:
                line += f", sparse int8 copy **{readable(int8_ppl.perplexity)}**"
            st.markdown(line + f" ({now.perplexity_note}).")
            store = shared_store()           # each sparsify (and its int8 copy) is one recorded run
            if ("run", key) not in state.caches:
                state.caches[("run", key)] = record_sparsify(store, working, sparse, now.perplexity, ppl.perplexity,
                                                             sparse_size)
            if int8_ppl is not None and ("run-int8", key) not in state.caches:
                state.caches[("run-int8", key)] = record_sparsify(store, working, sparse, now.perplexity,
                                                                  ppl.perplexity, sparse_size, int8_ppl.perplexity)
    signature = sparse_speed_signature(working, sparse, int8_on)
    speed_job = sparse_speed_job_for(shared_store(), signature, state.caches.get(SPEED_JOB))
    timing = speed_job is not None and speed_job.state in ("queued", "running")
    if st.button("Measure speed", key="weights_speed", icon=":material/speed:", disabled=timing,
                 help=f"Times your model, the sparse copy (and the int8 copy when made) in turns ({SPEED_REPEATS} "
                      "rounds) in the background and compares each with your model round by round, as on Compare."):
        with report_errors("starting the speed measurement") as failed_start, \
                st.spinner("Saving your model and the sparse copy for the job…"):
            device = state.choice.device if state.choice else "auto"
            state.caches[SPEED_JOB] = start_sparse_speed(shared_jobs(), working, sparse, int8_on, signature, device)
        if not failed_start:
            st.rerun()                          # draw the page again with the job's progress, the button disabled
    own_speed = speed_job is not None and speed_job.id == state.caches.get(SPEED_JOB)
    if timing:
        job_progress(speed_job.id, "Measuring speed in the background", "weights_speed_cancel",
                     "Stop timing; nothing measured so far is kept.")
    elif speed_job is not None and speed_job.state == "succeeded":
        speed = InterleavedSpeed.from_dict(speed_job.result["speed"])
        st.markdown(speed_sentence(speed, config.pattern))
        int8_line = int8_speed_sentence(speed)
        if int8_line is not None:
            st.markdown(int8_line)
    elif own_speed and speed_job.state == "cancelled":
        st.info("The speed measurement was cancelled: nothing was kept. Press Measure speed to time the models "
                "again.", icon=":material/cancel:")
    elif own_speed:
        st.warning(f"The speed measurement {speed_job.state}: {job_failure(speed_job)}",
                   icon=":material/warning:")

    st.subheader("Save the sparse copy")
    default = f"{Path(working.base.source).name}-{method}-{round(stats.sparsity * 100)}-sparse"
    name = st.text_input("Name", default, key="weights_save_name",
                         help=f"Saved in the data folder's {MODELS_FOLDER}/ folder as an ordinary model folder "
                              "(safetensors) with its bitmask-compressed file beside it; with int8 on, the int8 copy "
                              "is saved as '<name>-int8'. Both appear on the Model and Compare pages.")
    with report_errors("checking the name") as bad_name:
        replaced = existing_targets(name, int8_on)
    replace_ok = True
    if not bad_name and replaced:
        st.warning(f"{', '.join(repr(p.name) for p in replaced)} already saved; saving again replaces "
                   f"{'it' if len(replaced) == 1 else 'them'}.", icon=":material/warning:")
        replace_ok = st.checkbox("Replace", key="weights_save_replace")
    if st.button("Save to the data folder", key="weights_save", icon=":material/save:",
                 disabled=bool(bad_name) or not replace_ok):
        with report_errors("saving the sparse copy"), st.spinner("Saving…"):
            quantized = state.caches.get(("int8", key)) if int8_on else None
            folders = save_sparse(sparse, working.tokenizer, name, quantized,
                                  note={"base_model": working.base.source, "dashboard_steps": working.history()})
            st.success("Saved as " + " and ".join(f"`{visitor_name(f)}`" for f in folders) + ". Load it on the "
                       "Model page or compare it on the Compare page.", icon=":material/check_circle:")

st.subheader("Which layers can take it? Layer sensitivity")
st.caption("Prunes each weight matrix alone to each level, measures the perplexity with the app's protocol, and "
           "restores it exactly. Runs in the background (you can leave the page); the result is also recorded on "
           "the Experiments page.")
cols = st.columns(3)
levels = cols[0].multiselect("Levels", [0.1, 0.25, 0.5, 0.75, 0.9], [0.1, 0.5], key="weights_sens_levels",
                             format_func=lambda s: f"{s:.0%}")
sens_method = cols[1].selectbox("Mask", MASK_ONLY_METHODS, key="weights_sens_method",
                                help="l1/l2: smallest weights (magnitude); random: a baseline.")
tokens = cols[2].select_slider("Tokens per probe", [256, 512, 1024, 2048, EVAL_PROTOCOL.tokens], EVAL_PROTOCOL.tokens,
                               key="weights_sens_tokens",
                               help=f"The protocol scores {EVAL_PROTOCOL.tokens:,} tokens; fewer is faster and noisier.")
if st.button("Scan layer sensitivity", key="weights_sens_go", icon=":material/query_stats:"):
    with report_errors("starting the sensitivity scan"):
        request = SensitivityRequest(sens_method, sorted(float(s) for s in levels), int(tokens))
        device = state.choice.device if state.choice else "auto"
        state.sensitivity_job_id = start_sensitivity(shared_jobs(), shared_store(), working, request, device)
        keep_url(state)


if state.sensitivity_job_id is not None:
    with report_errors("reading the sensitivity scan") as failed:
        sens_job = shared_store().get_job(state.sensitivity_job_id)
    if not failed:
        if sens_job.state in ("queued", "running"):
            job_progress(sens_job.id, "Scanning", "weights_sens_cancel", cancel_label="Cancel the scan")
        elif sens_job.state == "succeeded" and sensitivity_of(sens_job.result) is not None:
            result = sensitivity_of(sens_job.result)
            older = made_before(shared_store().get_experiment(sens_job.experiment_id).config, working,
                                "This sensitivity scan")
            if older is not None:        # pruned since: the scan describes that earlier model
                st.warning(older + " Scan again to see your model as it is now.", icon=":material/history:")
            st.altair_chart(sensitivity_lines(result), key="weights_sens_chart")
            st.caption(f"Dashed: the scanned model with no weights zeroed ({readable(result.baseline)}). "
                       f"{sens_job.result.get('protocol', '')}. The suggested sparsity keeps an average of "
                       f"{SUGGESTED_AVERAGE:.0%} but "
                       "prunes the least sensitive matrices most (`sentinel sparsify --per-matrix`).")
            st.dataframe(sensitivity_table(result, sens_job.result.get("suggestion")), hide_index=True,
                         key="weights_sens_table")
        else:
            st.warning(f"The sensitivity scan {sens_job.state}: {job_failure(sens_job)}",
                       icon=":material/warning:")
