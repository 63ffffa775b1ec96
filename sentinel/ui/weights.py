"""The Weights page: weight-level sparsity (`sentinel.sparsity`) on a copy of the session's model — one-shot or
gradual schedule, per-layer sparsity, sizes (dense, bitmask-compressed, int8), the protocol perplexity and
measured speed (said plainly when zeros do not make this hardware faster), saving the copy to the data folder.
Sparsify runs are recorded in the experiment store (kind "weights-sparsify"); the layer-sensitivity scan is
`sentinel.ui.weights_sensitivity`."""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from sentinel.errors import DataError
from sentinel.files import mark_folder
from sentinel.evaluation.paired import (SPEED_NEW_TOKENS, SPEED_PROMPT_TOKENS, SPEED_REPEATS, InterleavedSpeed,
                                       interleaved_speed)
from sentinel.jobs import JobCancelled, JobContext, JobManager, ProgressEvent
from sentinel.models import load_model, save_model
from sentinel.sparsity.masks import (SparsifyResult, SparsityConfig, make_permanent, parse_pattern, sparsify,
                                     sparsity_stats)
from sentinel.sparsity.quantize import int8_bytes, quantize_int8, save_int8
from sentinel.sparsity.schedule import MASK_ONLY_METHODS, finetune_sparse, gradual_over, start_gradual
from sentinel.sparsity.scores import DATA_METHODS
from sentinel.sparsity.storage import COMPRESSED_FILE, SizeReport, save_compressed
from sentinel.sparsity.text import calibration_blocks
from sentinel.store import JobRecord, Store, new_id, sentinel_home
from sentinel.ui.analysis import block_size_for
from sentinel.ui.format import human_bytes
from sentinel.ui.history import sparsify_run_name
from sentinel.ui.job_copies import input_copy_params, load_job_copy, matching_job, staged_copies
from sentinel.ui.library import model_folder_for
from sentinel.ui.protocol import EVAL_PROTOCOL
from sentinel.ui.session import WorkingModel, ran_on
from sentinel.workflows.summary import RunSummary

logger = logging.getLogger(__name__)

NO_SPEEDUP = "no speed-up from unstructured sparsity on this hardware"
SPARSIFY_KIND = "weights-sparsify"
PAGE_SCHEDULES = ("oneshot", "gradual")            # lottery tickets train for several rounds: `sentinel sparsify`
@dataclass
class ScheduleSettings:
    """One-shot (masks once), or gradual: Zhu & Gupta's cubic ramp to the target over `steps` fine-tuning steps
    on the bundled train split, zeros held after every optimizer step (`sentinel sparsify --schedule gradual`)."""

    kind: str = "oneshot"
    steps: int = 20
    batch_size: int = 4
    block_size: int = 64
    learning_rate: float = 1e-4

    def validate(self, config: SparsityConfig) -> None:
        if self.kind not in PAGE_SCHEDULES:
            raise DataError(f"Unknown schedule {self.kind!r}; choose {' or '.join(PAGE_SCHEDULES)} "
                            "(lottery tickets run with `sentinel sparsify --schedule lottery`).")
        if self.kind == "gradual":
            if self.steps < 1:
                raise DataError(f"Gradual pruning needs at least 1 training step, got {self.steps}.")
            if config.method not in MASK_ONLY_METHODS:
                raise DataError(f"Gradual pruning recomputes its masks during training with "
                                f"{', '.join(MASK_ONLY_METHODS)}; {config.method} needs calibration passes, so "
                                "use it one-shot or pick l1.")
            if parse_pattern(config.pattern) is not None:
                raise DataError("Gradual pruning ramps an unstructured share; choose one-shot for 2:4.")

    def describe(self) -> str:
        return "one-shot" if self.kind == "oneshot" else f"gradual over {self.steps} steps"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SparseModel:
    """The session's model with weights zeroed (masks made permanent), what `sparsify` reported, and for a
    gradual schedule the (step, scheduled, achieved) sparsity at each mask update."""

    model: nn.Module
    result: SparsifyResult
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    history: list[tuple[int, float, float]] = field(default_factory=list)
    finetune: dict[str, Any] | None = None


def sparsify_copy(model: nn.Module, tokenizer: Any, config: SparsityConfig,
                  schedule: ScheduleSettings | None = None, calibration_count: int = 16,
                  on_event: Callable[[ProgressEvent], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> SparseModel:
    """Sparsify a deep copy of `model` (the session's model is untouched), one-shot or gradually; data methods
    calibrate on the bundled train split. The masks are made permanent, so the copy is an ordinary model
    holding zeros: what is saved, sized, quantized and timed. A gradual run reports each training step to
    `on_event` and stops early when `should_stop()` turns true (its result then says 'cancelled')."""
    schedule = schedule or ScheduleSettings()
    config.validate()
    schedule.validate(config)
    work = copy.deepcopy(model)
    if schedule.kind == "oneshot":
        calibration = calibration_blocks(tokenizer, blocks=calibration_count) if config.method in DATA_METHODS else None
        result = sparsify(work, config, calibration)
        make_permanent(work)
        return SparseModel(work, result, schedule)
    from sentinel.training.config import FineTuneConfig
    from sentinel.training.finetune import describe_result, load_finetune_data

    start = time.perf_counter()
    block = block_size_for(work, schedule.block_size)          # capped by the model's positions, when it states them
    ft = FineTuneConfig(max_steps=schedule.steps, learning_rate=schedule.learning_rate,
                        batch_size=schedule.batch_size, block_size=block, eval_every=0, eval_max_tokens=max(block, 512),
                        seed=config.seed, device=str(next(work.parameters()).device))
    ft.validate()
    data = load_finetune_data(tokenizer, None, block, max_validation_tokens=ft.eval_max_tokens)
    callback = start_gradual(work, gradual_over(schedule.steps, config.sparsity, config.method, config.scope,
                                                config.seed))
    trained = finetune_sparse(work, tokenizer, data, ft, callback=callback, on_event=on_event,
                              should_stop=should_stop)
    make_permanent(work)
    result = SparsifyResult(config, sparsity_stats(work), time.perf_counter() - start)
    return SparseModel(work, result, schedule, list(callback.history), describe_result(trained))


def sparsegpt_settings(config: Mapping[str, Any]) -> str | None:
    """The SparseGPT settings of a sparsify config (its `to_dict`) in words; None for the other methods."""
    if config.get("method") != "sparsegpt":
        return None
    return (f"SparseGPT: dampening {config['dampening']:g} × the Hessian's mean diagonal, column blocks of "
            f"{config['column_block']}; the kept weights were updated to reconstruct each matrix's calibration "
            "outputs.")


def layer_sparsity_frame(result: SparsifyResult) -> pd.DataFrame:
    """One row per masked matrix: layer, matrix, sparsity (exact zero share)."""
    return pd.DataFrame([{"layer": m.layer if m.layer is not None else -1, "matrix": m.matrix,
                          "sparsity": m.sparsity} for m in result.stats.matrices])


def schedule_frame(history: Sequence[Sequence[float]]) -> pd.DataFrame:
    """(step, sparsity, which) for a gradual run: the cubic schedule's target and the zeros achieved."""
    rows = [{"step": int(step), "sparsity": float(value), "which": which}
            for step, target, achieved in history for value, which in ((target, "scheduled"), (achieved, "achieved"))]
    return pd.DataFrame(rows, columns=["step", "sparsity", "which"])


@dataclass
class Int8Copy:
    """The sparse copy quantized to int8 (torch.ao dynamic, CPU) and the bytes of its int8 safetensors file."""

    model: nn.Module
    file_bytes: int


def quantize_copy(sparse: nn.Module, tokenizer: Any) -> Int8Copy:
    """Prune, then quantize: an int8 copy of the sparse model, its file size measured by writing it (temp folder)."""
    quantized = quantize_int8(sparse)
    with tempfile.TemporaryDirectory(prefix="sentinel-int8-") as folder:
        size = int8_bytes(save_int8(quantized, tokenizer, Path(folder) / "int8"))
    return Int8Copy(quantized, size)


def size_table(dense: SizeReport, sparse: SizeReport) -> pd.DataFrame:
    """Non-zero parameters and bytes on disk (dense safetensors, bitmask-compressed, int8 when measured)."""
    rows = [
        ("Non-zero parameters", f"{dense.nonzero_parameters:,}", f"{sparse.nonzero_parameters:,}"),
        ("Dense file (safetensors)", human_bytes(dense.dense_bytes), human_bytes(sparse.dense_bytes)),
        ("Compressed file (bitmask + values)", human_bytes(dense.compressed_bytes),
         human_bytes(sparse.compressed_bytes)),
    ]
    if sparse.int8_bytes is not None:
        rows.append(("int8 file (int8 weights + scales)",
                     human_bytes(dense.int8_bytes) if dense.int8_bytes is not None else "–",
                     human_bytes(sparse.int8_bytes)))
    return pd.DataFrame(rows, columns=["", "Your model", "Sparse"]).set_index("")


def _ratios(speed: InterleavedSpeed, name: str) -> str:
    """Both phases' ratio to your model with their spread over the interleaved rounds (the app's one rule)."""
    return f"prefill {speed.ratio(name, 'prefill').describe()}, decode {speed.ratio(name, 'decode').describe()}"


def speed_sentence(speed: InterleavedSpeed, pattern: str | None) -> str:
    """The measured verdict of the sparse copy against your model (median of per-round ratios, 'no measurable
    difference' when their range covers 1.0), with the plain statement when unstructured zeros bought nothing."""
    measured = _ratios(speed, "sparse")
    if parse_pattern(pattern) is None and not speed.ratio("sparse", "prefill").faster:
        return (f"Measured: {measured} — {NO_SPEEDUP}. Dense kernels still multiply every zero; "
                "what sparsity saves here is the compressed file's size.")
    return f"Measured: {measured}."


def int8_speed_sentence(speed: InterleavedSpeed) -> str | None:
    """The measured verdict of the int8 copy against your model (None when int8 was not timed)."""
    if "sparse int8" not in speed.names:
        return None
    return (f"Measured int8 (dynamic quantization, CPU): {_ratios(speed, 'sparse int8')}. Whether "
            "int8 is faster depends on this CPU's int8 kernels; this is what it did here.")


def measure_sparse_speed(dense: nn.Module, sparse: nn.Module, tokenizer: Any, quantized: nn.Module | None = None,
                         repeats: int = SPEED_REPEATS,
                         on_run: Callable[[int, int, str], None] | None = None) -> InterleavedSpeed:
    """Dense, sparse (and the int8 copy, on the CPU only) timed in turns (`interleaved_speed`, the Compare page's
    rounds and token counts); `on_run(done, total, name)` follows each run (a job's progress; it may raise)."""
    models = {"dense": dense, "sparse": sparse}
    if quantized is not None:
        if next(dense.parameters()).device.type != "cpu":
            raise DataError("int8 dynamic quantization runs on the CPU and your model is on "
                            f"{next(dense.parameters()).device}; timing them together would compare devices, not "
                            "formats. Load the model on the CPU to time int8, or untick int8.")
        models["sparse int8"] = quantized
    return interleaved_speed(models, tokenizer, repeats=repeats, prompt_tokens=SPEED_PROMPT_TOKENS,
                             new_tokens=SPEED_NEW_TOKENS, on_run=on_run)


# -- Measure speed: a background job (2 or 3 models x SPEED_REPEATS rounds), as on the Compare page ------------------

SPEED_KIND = "weights-speed"
SPEED_RUNS = "weights-speed"       # $SENTINEL_HOME/<this>/<id>/{dense,sparse}: the job's input, removed when it ends


def sparse_speed_signature(working: WorkingModel, sparse: SparseModel, int8: bool) -> str:
    """What a speed result was measured on, stable across a reload: the session's model (base and steps), the sparse
    copy's settings and zero count, and whether the int8 copy was timed too."""
    return json.dumps({"base": working.base.source, "steps": working.history(),
                       "config": sparse.result.config.to_dict(), "schedule": sparse.schedule.to_dict(),
                       "zeros": sparse.result.stats.target_zeros, "int8": int8}, sort_keys=True, default=str)


def start_sparse_speed(jobs: JobManager, working: WorkingModel, sparse: SparseModel, int8: bool, signature: str,
                       device: str = "auto") -> str:
    """Save your model and the sparse copy for the job (removed when it ends, in any state) and queue the timing;
    returns the job id. The int8 copy is made again by the job from the sparse one (quantization is deterministic)."""
    weight = next(working.model.parameters())
    if int8 and weight.device.type != "cpu":
        raise DataError("int8 dynamic quantization runs on the CPU and your model is on "
                        f"{weight.device}; timing them together would compare devices, not formats. Load the model "
                        "on the CPU to time int8, or untick int8.")
    root = sentinel_home() / SPEED_RUNS / new_id()
    with staged_copies(root):
        save_model(working.model, working.tokenizer, root / "dense", note={"weights_speed": "your model"})
        save_model(sparse.model, working.tokenizer, root / "sparse", note={"weights_speed": "sparse copy"})
        mark_folder(root, kind="run")
        params = {"dense": str(root / "dense"), "sparse": str(root / "sparse"), "int8": int8, "signature": signature,
                  "dtype": str(weight.dtype).removeprefix("torch."), "repeats": SPEED_REPEATS}
        return jobs.submit(SPEED_KIND, input_copy_params(params, root), device=device)


def run_sparse_speed_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "weights-speed": load both copies (quantize the sparse one when asked) and
    time them in interleaved rounds with progress after each run and cancel between runs."""
    ctx.report(ProgressEvent(step=0, message="loading your model and the sparse copy"), record_metrics=False)
    dense = load_job_copy(params["dense"], ctx.device, "Weights", dtype=params["dtype"])
    sparse = load_job_copy(params["sparse"], ctx.device, "Weights", dtype=params["dtype"])
    quantized = quantize_int8(sparse.model) if params["int8"] else None      # a copy; the sparse one is kept
    ctx.raise_if_cancelled()

    def on_run(done: int, total: int, name: str) -> None:
        ctx.report(ProgressEvent(step=done, total_steps=total, message=f"timed {name} ({done} of {total} runs, "
                                 "warm-ups included)"), record_metrics=False)
        ctx.raise_if_cancelled()

    speed = measure_sparse_speed(dense.model, sparse.model, dense.tokenizer, quantized,
                                 repeats=int(params["repeats"]), on_run=on_run)
    return {"speed": speed.to_dict()}


def sparse_speed_job_for(store: Store, signature: str, own: str | None = None) -> JobRecord | None:
    """The speed job that timed exactly these models (this session's, or the newest found again after a reload)."""
    return matching_job(store, SPEED_KIND, signature, own)


# -- gradual sparsify: a background job (it fine-tunes) ---------------------------------------------------------------

GRADUAL_KIND = "weights-gradual"
GRADUAL_RUNS = "weights-gradual"             # $SENTINEL_HOME/<this>/<job>/{start,sparse}: the model before and after


def start_gradual_sparsify(jobs: JobManager, working: WorkingModel, config: SparsityConfig,
                           schedule: ScheduleSettings, device: str = "auto") -> str:
    """Save the session's model and queue the gradual run (kind "weights-gradual"); returns the job id.
    The page records the run in the experiment store when it shows the result, as for one-shot."""
    config.validate()
    schedule.validate(config)
    folder = sentinel_home() / GRADUAL_RUNS / new_id()
    with staged_copies(folder / "start") as start_folder:
        start = save_model(working.model, working.tokenizer, start_folder, note={"dashboard_steps": working.history()})
        params = {"model": str(start), "out": str(folder / "sparse"), "config": config.to_dict(),
                  "schedule": schedule.to_dict(), "dashboard_steps": working.history(),
                  "base_model": working.base.source}
        return jobs.submit(GRADUAL_KIND, input_copy_params(params, start), device=device)


def run_gradual_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "weights-gradual": gradual sparsify with progress per training step and
    cancel between steps; the sparse model is saved (masks made permanent) for the page to load. The job manager
    removes the start copy when the job ends (`input_copy_params`); the sparse result is kept."""
    loaded = load_job_copy(params["model"], ctx.device, "Weights")
    config = SparsityConfig(**{**params["config"], "include": tuple(params["config"].get("include", ()))})
    schedule = ScheduleSettings(**params["schedule"])
    sparse = sparsify_copy(loaded.model, loaded.tokenizer, config, schedule,
                           on_event=lambda event: ctx.report(event, record_metrics=False),
                           should_stop=lambda: ctx.cancelled)
    if ctx.cancelled:
        raise JobCancelled(ctx.job_id)
    out = save_model(sparse.model, loaded.tokenizer, params["out"], note={"dashboard_steps": params["dashboard_steps"]})
    return {"model": str(out), "seconds": sparse.result.seconds, "history": [list(h) for h in sparse.history],
            "finetune": sparse.finetune}


def gradual_result(job_result: Mapping[str, Any], config: SparsityConfig, schedule: ScheduleSettings,
                   device: str) -> SparseModel:
    """The SparseModel a finished gradual job saved (loaded from its folder, zeros counted again)."""
    loaded = load_model(job_result["model"], device=device)
    stats = sparsity_stats(loaded.model)
    return SparseModel(loaded.model, SparsifyResult(config, stats, float(job_result["seconds"])), schedule,
                       [tuple(h) for h in job_result["history"]], job_result.get("finetune"))


def gradual_ran_on(job_params: Mapping[str, Any], working: WorkingModel) -> bool:
    """Whether a gradual job started from the session's model as it is now (same base model, same steps)."""
    return ran_on(job_params, working)


def gradual_settings(job_params: Mapping[str, Any]) -> tuple[SparsityConfig, ScheduleSettings]:
    """The settings a gradual job ran with (to match it with the page's current settings)."""
    data = job_params["config"]
    return (SparsityConfig(**{**data, "include": tuple(data.get("include", ()))}),
            ScheduleSettings(**job_params["schedule"]))


# -- saving to the data folder ---------------------------------------------------------------------------------------

def int8_name(name: str) -> str:
    return f"{name}-int8"


def save_sparse(sparse: SparseModel, tokenizer: Any, name: str, quantized: Int8Copy | None = None,
                note: Mapping[str, Any] | None = None) -> list[Path]:
    """Save the sparse copy as `name` under the data folder (ordinary safetensors + the bitmask file, so the Model
    and Compare pages load it like any saved model) and, when given, its int8 copy as `<name>-int8`.

    Both go through the atomic folder writer, which refuses folders Sentinel did not write."""
    folder = model_folder_for(name)
    int8_folder = model_folder_for(int8_name(name)) if quantized is not None else None
    done = {k: v for k, v in sparse.result.to_dict().items() if k != "matrices"}
    note = {"how": "dashboard weights page", "sparsify": done, "schedule": sparse.schedule.to_dict(), **dict(note or {})}

    def compressed(staging: Path) -> None:
        save_compressed(sparse.model, staging / COMPRESSED_FILE)

    saved = [save_model(sparse.model, tokenizer, folder, note=note, also_write=compressed)]
    if int8_folder is not None:
        saved.append(save_int8(quantized.model, tokenizer, int8_folder, note={**note, "int8_of": str(folder)}))
    return saved


def existing_targets(name: str, with_int8: bool) -> list[Path]:
    """The folders a save under `name` would replace (to ask first)."""
    folders = [model_folder_for(name)] + ([model_folder_for(int8_name(name))] if with_int8 else [])
    return [f for f in folders if f.exists()]


# -- the experiment store ----------------------------------------------------------------------------------------------

def record_sparsify(store: Store, working: WorkingModel, sparse: SparseModel, baseline: float | None,
                    perplexity: float, sizes: SizeReport, int8_perplexity: float | None = None) -> str:
    """Record a sparsify run (settings, per-layer sparsity, sizes, perplexity) as a 'weights-sparsify' experiment;
    with `int8_perplexity` it is the prune-then-quantize run (its own record: perplexity_after is the int8 copy's)."""
    int8 = int8_perplexity is not None
    config = {**sparse.result.config.to_dict(), "schedule": sparse.schedule.to_dict(), "int8": int8,
              "base_model": working.base.source, "dashboard_steps": working.history()}
    experiment = store.create_experiment(sparsify_run_name(sparse.result.config, sparse.schedule, int8), config,
                                         kind=SPARSIFY_KIND, model=working.base.source)
    stats = sparse.result.stats
    summary = RunSummary(status="completed", baseline_perplexity=baseline, perplexity_pruned=perplexity,
                         perplexity_after=int8_perplexity if int8 else perplexity,
                         params_before=stats.total_parameters, params_after=stats.total_parameters, extra={
                             "sparsity": stats.sparsity, "nonzero_parameters": stats.nonzero_parameters,
                             "sizes": sizes.to_dict(), "seconds": sparse.result.seconds,
                             "layer_sparsity": layer_sparsity_frame(sparse.result).to_dict("records"),
                             "schedule_history": [list(h) for h in sparse.history],
                             "protocol": EVAL_PROTOCOL.describe()})
    if sparse.finetune is not None:
        summary.extra["finetune"] = sparse.finetune
    store.update_experiment(experiment, status="completed", summary=summary.to_dict())
    return experiment


def layer_sparsity_of(summary: Mapping[str, Any]) -> pd.DataFrame | None:
    """A 'weights-sparsify' experiment's per-matrix sparsity as the page's frame (None when it holds none)."""
    rows = summary.get("layer_sparsity")
    return pd.DataFrame(rows) if isinstance(rows, list) and rows else None
