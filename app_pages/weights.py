"""Weights page: weight-level sparsity on a copy of the session's model; per-layer sparsity, sizes, perplexity and
speed."""

import json

import streamlit as st

from app_support.state import current_figures, dashboard, report_errors, require_model, show_notices
from sentinel.sparsity.masks import SCOPES, SparsityConfig
from sentinel.sparsity.scores import DATA_METHODS, METHODS
from sentinel.sparsity.storage import size_report
from sentinel.ui.protocol import protocol_perplexity
from sentinel.ui.weights import (layer_sparsity_frame, measure_sparse_speed, size_table, sparsify_copy,
                                 speed_sentence)

state = dashboard()
st.title(":material/blur_on: Weights")
st.caption("Zero individual weights instead of whole units (the guide's weight-level methods), on a copy of your "
           "model as it is now. The copy lives in this browser session; your pruning steps are not changed.")
working = require_model(state)
show_notices(state)

cols = st.columns(4)
method = cols[0].selectbox("Method", METHODS, index=METHODS.index("wanda"), key="weights_method",
                           help="l1/l2: smallest weights; random; gradient/snip: loss sensitivity; wanda: "
                                "|weight| × input norm. " + ", ".join(DATA_METHODS) + " calibrate on 16 blocks of "
                                "the bundled training text.")
pattern = cols[1].radio("Pattern", ["unstructured", "2:4"], key="weights_pattern",
                        help="2:4 keeps 2 of every 4 weights along the input (50%), the pattern sparse tensor "
                             "cores accelerate.")
sparsity = cols[2].slider("Sparsity", 0.0, 0.9, 0.5, 0.05, key="weights_sparsity", format="%.2f",
                          disabled=pattern == "2:4")
scope = cols[3].radio("Scope", SCOPES, key="weights_scope", disabled=pattern == "2:4",
                      help="layer: the same share in every matrix; global: one ranking over all; row: per output "
                           "row (Wanda's comparison group).")
config = SparsityConfig(method, float(sparsity), "layer" if pattern == "2:4" else scope,
                        None if pattern == "unstructured" else pattern)
key = ("sparse", id(working), working.version, json.dumps(config.to_dict(), sort_keys=True))
if st.button("Sparsify a copy", type="primary", key="weights_go", icon=":material/blur_on:"):
    with report_errors("sparsifying"), st.spinner("Scoring and masking the weights…"):
        state.caches["sparse-latest"] = (key, sparsify_copy(working.model, working.tokenizer, config))
latest = state.caches.get("sparse-latest")
if latest is None or latest[0] != key:
    st.info("Press **Sparsify a copy** to see what these settings do.")
    st.stop()
sparse = latest[1]
stats = sparse.result.stats
st.markdown(f"**{stats.sparsity:.1%}** of the targeted weights are zero ({stats.target_zeros:,} of "
            f"{stats.target_size:,}), {sparse.result.seconds:.1f} s of scoring.")
frame = layer_sparsity_frame(sparse.result)
st.bar_chart(frame, x="layer", y="sparsity", color="matrix", stack=False,
             x_label="Layer", y_label="Share of zero weights")
with report_errors("measuring sizes and perplexity"):
    sizes = {("size", id(working), working.version): working.model, ("size-sparse", key): sparse.model}
    for cache_key, model in sizes.items():
        if cache_key not in state.caches:
            state.caches[cache_key] = size_report(model)
    dense_size, sparse_size = (state.caches[k] for k in sizes)
    st.table(size_table(dense_size, sparse_size))
    now = current_figures(state, working)
    if ("ppl-sparse", key) not in state.caches:
        state.caches[("ppl-sparse", key)] = protocol_perplexity(sparse.model, working.tokenizer)
    ppl = state.caches[("ppl-sparse", key)]
    if now is not None:
        st.markdown(f"Perplexity: your model **{now.perplexity:.2f}**, sparse copy **{ppl.perplexity:.2f}** "
                    f"({now.perplexity_note}).")
if st.button("Measure speed", key="weights_speed", icon=":material/speed:",
             help="Times your model and the sparse copy in turns (3 rounds)."):
    with report_errors("measuring speed"), st.spinner("Timing both models in turns…"):
        state.caches[("speed-sparse", key)] = measure_sparse_speed(working.model, sparse.model, working.tokenizer)
speed = state.caches.get(("speed-sparse", key))
if speed is not None:
    st.markdown(speed_sentence(speed, config.pattern))
