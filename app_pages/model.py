"""Model page: choose the model, device and dtype; see what was loaded."""

import streamlit as st

from sentinel.evaluation.size import parameter_count, weight_bytes
from sentinel.files import check_allowed_folder, check_hub_id, visitor_name
from sentinel.pruning import active_heads
from sentinel.ui.format import human_bytes, human_count
from sentinel.ui.history import readable
from sentinel.ui.library import MODELS_FOLDER, saved_models
from app_support.model_load import confirm_load, load_or_ask
from app_support.state import (ModelChoice, base_figures, bundled_model_available, dashboard, report_errors,
                               require_model, show_notices)

KINDS = {
    "bundled": "Bundled demo model",
    "folder": "Local folder",
    "saved": "Saved pruned model",
    "hub": "Hugging Face hub id",
}

state = dashboard()
show_notices(state)
st.title(":material/memory: Model")
st.caption("Pick the model to explore. It is loaded once for everyone using this app; "
           "your pruning and training happen on your own copy.")

kind = st.radio("Model", list(KINDS), format_func=KINDS.get, horizontal=True, key="model_kind")
source: str | None = None
if kind == "folder":
    source = st.text_input("Local folder", key="model_folder", placeholder="/path/to/model-folder",
                           help="A Hugging Face model folder (config.json + safetensors weights) or a model "
                                "Sentinel saved, under this app's model folders (the data folder, the bundled "
                                "models, or a folder listed in SENTINEL_MODEL_ROOTS).").strip()
elif kind == "saved":
    saved = saved_models()
    source = st.selectbox("Saved pruned model", [str(p) for p in saved], key="model_saved", format_func=visitor_name,
                          index=0 if saved else None,
                          placeholder=f"Nothing saved in the data folder's {MODELS_FOLDER}/ yet")
elif kind == "hub":
    source = st.text_input("Hub id", key="model_hub",
                           placeholder="e.g. gpt2 (needs network or a local Hugging Face cache)").strip()
cols = st.columns(2)
device = cols[0].selectbox("Device", ["auto", "cuda", "mps", "cpu"], key="model_device",
                           help="auto picks a CUDA GPU, then Apple MPS, then the CPU.")
dtype = cols[1].selectbox("Number format (dtype)", ["auto", "float32", "float16", "bfloat16"], key="model_dtype",
                          help="auto: float32 on the CPU, the checkpoint's own format elsewhere.")
submitted = st.button("Load model", type="primary", icon=":material/download:", key="model_load")

if submitted:
    if kind != "bundled" and not source:
        st.error(f"Enter the {KINDS[kind].lower()} to load first.", icon=":material/error:")
    else:
        with st.spinner(f"Loading {visitor_name(source or None)}…"), report_errors("loading the model"):
            if kind == "folder":
                source = str(check_allowed_folder(source))   # same message whether the path exists or not
            elif kind == "hub":
                source = check_hub_id(source)                # a hub id, never a path on the server
            load_or_ask(state, ModelChoice(source, device, dtype))   # with work at stake: kept as a run, then asks
confirm_load(state)

if state.working is None:
    if not bundled_model_available():
        st.warning("The bundled demo model is not installed in this copy; load a local folder instead.")
        st.stop()
    require_model(state)             # a first visit starts on the bundled model, ready for the other pages

working = state.working
base = working.base
layout = base.layout
st.subheader(state.choice.label() if state.choice else visitor_name(base.source))
cols = st.columns(4)
cols[0].metric("Architecture", f"{layout.family} ({layout.model_type})")
cols[1].metric("Layers × heads", f"{layout.num_layers} × {layout.num_heads}",
               help=f"{layout.num_kv_heads} key/value heads per layer; head size {layout.head_dim}.")
cols[2].metric("Parameters", human_count(parameter_count(base.model)),
               help=f"{parameter_count(base.model):,} parameters, {human_bytes(weight_bytes(base.model))} of weights.")
cols[3].metric("Device", str(base.device))
cols = st.columns(4)
cols[0].metric("Load time", f"{base.load_seconds:.2f} s", help="Time the first load took in this app process.")
active = sum(len(heads) for heads in active_heads(base.model).values())
cols[1].metric("Active heads (as loaded)", f"{active} / {layout.total_heads}")
cols[2].metric("Your pruning steps", len(working.steps))
cols[3].metric("Grouped-query", "yes" if layout.kv_group_size > 1 else "no",
               help="With grouped-query attention several query heads share one key/value head; "
                    "removing them physically works only a whole group at a time.")
figures = base_figures(state, working)
if figures is not None:
    st.metric("Perplexity (as loaded)", readable(figures.perplexity), help=f"The app's one protocol: "
              f"{figures.perplexity_note}. Prune, Fine-tune, Compare and Experiments use the same.")
    spread = f" ({figures.perplexity_interval}, bootstrap over windows)" if figures.perplexity_interval else ""
    st.caption(f"Perplexity {readable(figures.perplexity)}{spread}: {figures.perplexity_note}.")
if base.record:
    st.caption(f"Loaded a Sentinel-saved pruned model from {visitor_name(base.source)}; its pruning history:")
    st.json(base.record.get("history", []), expanded=False)
else:
    st.caption(f"Source: {visitor_name(base.source)}")
