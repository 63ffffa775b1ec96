"""`compress`: from a target ("half the parameters", "1.8x faster") to a saved, recovered, optionally fine-tuned model.

Stages, each reported as a progress event and checked for cancellation:
1. measure the original (perplexity on the validation blocks, parameters, body FLOPs);
2. choose the importance metric: for each candidate metric, score every unit kind, select the budget's plan,
   mask it temporarily and measure the loss on a few calibration batches; the lowest loss wins (all reported).
   Random selection is measured the same way with several seeds (median and range) as the baseline every metric
   must beat; the report says which metrics lose to it (`versus_random`);
3. select the plan with `select_budget` (params / flops targets), or, for a speed target, step the params
   share up until the measured median prefill speed ratio (interleaved pairs, `compare_speed`) meets it;
4. remove the units and measure; 5. recover (`recover`, lstsq / bias) and measure;
6. fine-tune (`sentinel.training.finetune`, the same path as `sentinel finetune`, optionally distilled from
   the unpruned copy) and measure; 7. save (`save_model`), and with `export` write a stock folder (`export_model`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sentinel.errors import SentinelError
from sentinel.jobs import JobCancelled, JobContext, ProgressEvent

logger = logging.getLogger(__name__)

UNIT_NAMES = {"heads": "head", "neurons": "neuron", "layers": "layer"}
DEFAULT_METRIC = {"head": "magnitude", "neuron": "magnitude", "layer": "block_influence"}
RECOVER_CHOICES = ("none", "bias", "lstsq")
MAX_SHARE = 0.95          # the largest params share a speed target may step up to
STAGES = ("measure", "metric", "select", "remove", "recover", "finetune", "save")
RANDOM = "random"         # the baseline candidate, measured with `random_seeds` seeds


class CompressError(SentinelError):
    """The compress request cannot be met or is malformed; the message says what to change."""


@dataclass(frozen=True)
class CompressTarget:
    """One target: `params` / `flops` share of the prunable body to remove, or a `speed` ratio to reach."""

    kind: str      # "params" | "flops" | "speed"
    value: float

    @classmethod
    def parse(cls, text: str) -> CompressTarget:
        key, sep, value = text.strip().partition("=")
        key = key.strip()
        if not sep or key not in ("params", "flops", "speed"):
            raise CompressError(f"Cannot read target {text!r}: write params=0.5, flops=0.5 or speed=1.8.")
        try:
            number = float(value)
        except ValueError:
            raise CompressError(f"Target {key}={value!r} is not a number.") from None
        if key == "speed" and not (math.isfinite(number) and number > 1.0):
            raise CompressError(f"A speed target is a ratio above 1 (e.g. speed=1.8), got {number}.")
        if key != "speed" and not 0.0 < number < 1.0:
            raise CompressError(f"Target {key}={number} is the share to remove: give a number in (0, 1).")
        return cls(key, number)

    def describe(self) -> str:
        return f"{self.kind}={self.value}"


@dataclass
class CompressConfig:
    """Everything a compress run needs, JSON-ready (it is a job's params)."""

    out: str
    target: str
    model: str | None = None                      # hub id or folder; None = the bundled model
    units: list[str] = field(default_factory=lambda: ["head", "neuron"])
    allocation: str = "global"
    recover: str = "lstsq"
    metrics: list[str] = field(default_factory=lambda: ["magnitude", "gradient"])   # candidates compared
    random_seeds: int = 3                         # random selection, seeds seed .. seed+n-1 (0: not measured)
    compare_batches: int = 2                      # calibration batches the metric comparison measures loss on
    calibration_text: str | None = None           # None = the model folder's own train split, else the bundled one
    calibration_samples: int = 128
    seq_len: int = 128
    text: str | None = None                       # fine-tuning text (None = own train split, else the bundled one)
    validation_text: str | None = None
    eval_max_tokens: int = 16384
    finetune_steps: int = 0
    distill: bool = False
    learning_rate: float = 1e-4
    batch_size: int = 8
    export: bool = False
    min_heads: int = 1
    min_neurons: int = 1
    speed_repeats: int = 5
    speed_iterations: int = 5
    prompt_tokens: int = 64
    new_tokens: int = 8
    seed: int = 0
    dtype: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressConfig:
        return cls(**{k: v for k, v in data.items() if k != "device"})

    def validate(self) -> CompressTarget:
        """Check every setting before any work; returns the parsed target."""
        target = CompressTarget.parse(self.target)
        unknown = [u for u in self.units if u not in UNIT_NAMES.values()]
        if unknown or not self.units:
            raise CompressError(f"Unknown unit kind {', '.join(unknown) or '(none)'}; choose from heads, neurons, "
                                "layers.")
        if self.allocation not in ("global", "uniform"):
            raise CompressError(f"Unknown allocation {self.allocation!r}; use global or uniform.")
        if self.allocation == "uniform" and "layer" in self.units:
            raise CompressError("Whole layers can only be allocated globally: drop layers from --units or use "
                                "--allocation global.")
        if self.recover not in RECOVER_CHOICES:
            raise CompressError(f"Unknown recovery {self.recover!r}; use one of {', '.join(RECOVER_CHOICES)}.")
        if self.random_seeds < 0:
            raise CompressError(f"random-seeds must be 0 or more, got {self.random_seeds}.")
        if RANDOM in self.metrics and self.random_seeds == 0:
            raise CompressError("--metrics random is measured with --random-seeds seeds: give 1 or more.")
        if not self.metrics and self.random_seeds == 0:
            raise CompressError("Give at least one candidate metric (or --random-seeds 1 or more).")
        from sentinel.metrics import KIND_METRICS

        every = {m for kind in self.units for m in KIND_METRICS[kind]}
        bad = [m for m in self.metrics if m not in every]
        if bad:
            raise CompressError(f"Metric {', '.join(bad)} applies to none of the units; choose from "
                                f"{', '.join(sorted(every))}.")
        for name in ("calibration_samples", "seq_len", "compare_batches", "eval_max_tokens", "batch_size",
                     "speed_iterations", "prompt_tokens", "new_tokens"):
            if getattr(self, name) < 1:
                raise CompressError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if self.speed_repeats < 2:
            raise CompressError("speed-repeats must be at least 2 (a spread needs two pairs).")
        if self.finetune_steps < 0:
            raise CompressError(f"finetune-steps must be 0 or more, got {self.finetune_steps}.")
        if self.distill and self.finetune_steps == 0:
            raise CompressError("--distill distils during fine-tuning: give --finetune-steps N as well.")
        return target


def _metric_for(kind: str, candidate: str) -> str:
    """The candidate metric where `kind` has it, else the kind's default (layers have no magnitude)."""
    from sentinel.metrics import KIND_METRICS

    return candidate if candidate in KIND_METRICS[kind] else DEFAULT_METRIC[kind]


def _calibration_loss(model: nn.Module, batches: list) -> float:
    """Mean token NLL over `batches` (the metric comparison's measure)."""
    from sentinel.metrics.batches import lm_loss_sum

    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss, n = lm_loss_sum(model, batch, causal=True)
            total, count = total + float(loss), count + n
    return total / count


class _Stages:
    """Progress events and cancellation checks for the run's stages."""

    def __init__(self, report: Callable[[ProgressEvent], None] | None, should_stop: Callable[[], bool] | None,
                 total: int) -> None:
        self.report, self.should_stop, self.total, self.step = report, should_stop, total, 0

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise JobCancelled("compress")

    def done(self, message: str, perplexity: float | None = None) -> None:
        self.step += 1
        logger.info("compress: %s", message)
        if self.report is not None:
            self.report(ProgressEvent(step=self.step, total_steps=self.total, message=message,
                                      val_perplexity=perplexity))
        self.check()


def run_compress(config: CompressConfig, device: str = "auto",
                 report: Callable[[ProgressEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run a compress job to the end; returns its JSON summary (also written to <out>/result.json).

    Raises JobCancelled when `should_stop()` turns true between stages (nothing is saved then).
    """
    from sentinel.evaluation.perplexity import is_causal_lm
    from sentinel.evaluation.size import parameter_count
    from sentinel.files import prepare_run_folder, write_file_atomically
    from sentinel.models.loading import load_model, save_model
    from sentinel.pruning import apply_plan
    from sentinel.models.flops import forward_flops
    from sentinel.pruning.budget import prunable_params
    from sentinel.pruning.experiment_runner import validation_perplexity
    from sentinel.pruning.recovery import CalibrationConfig, calibration_batches, recover
    from sentinel.data import calibration_text_for, finetune_text_sources
    from sentinel.training.finetune import load_finetune_data

    started = time.perf_counter()
    target = config.validate()
    out = prepare_run_folder(config.out)
    stages = _Stages(report, should_stop, len(STAGES) + (1 if config.export else 0))
    stages.check()
    loaded = load_model(config.model, device=device, dtype=config.dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    if not is_causal_lm(model):
        raise CompressError(f"{type(model).__name__} is a masked LM; compress measures next-token perplexity, so it "
                            "supports causal models (GPT-2, Llama, OPT, GPT-NeoX ...).")
    # a model folder's own splits unless texts were chosen: stdlib-gpt2 is calibrated and judged on its own text
    text, validation_text = finetune_text_sources(config.model, config.text, config.validation_text)
    calibration = CalibrationConfig(text=calibration_text_for(config.model, config.calibration_text),
                                    samples=config.calibration_samples, seq_len=config.seq_len)
    batches = calibration_batches(model, tokenizer, calibration)
    data = load_finetune_data(tokenizer, text, config.seq_len, validation_text,
                              max_validation_tokens=config.eval_max_tokens)
    timings: dict[str, float] = {}
    perplexities: dict[str, float] = {}

    def measure(stage: str, t0: float) -> float:
        perplexities[stage] = validation_perplexity(model, tokenizer, data)
        timings[stage] = time.perf_counter() - t0
        return perplexities[stage]

    t0 = time.perf_counter()
    before = {"params": parameter_count(model), "prunable_params": prunable_params(model),
              "body_flops": forward_flops(model, config.seq_len, lm_head=False)}
    stages.done(f"original: perplexity {measure('original', t0):.3f}", perplexities["original"])

    t0 = time.perf_counter()
    first_share = target.value if target.kind != "speed" else min(MAX_SHARE, 1.0 - 1.0 / target.value)
    first_target = f"{target.kind if target.kind != 'speed' else 'params'}={first_share}"
    comparison, scores = _choose_metric(model, config, batches, first_target, stages)
    best = min(comparison, key=lambda row: row["loss"])
    verdicts = versus_random(comparison)
    timings["metric"] = time.perf_counter() - t0
    losses = ", ".join(f"{row['metric']} {row['loss']:.4f}" for row in comparison)
    stages.done(f"metric {best['metric']} (calibration loss: {losses})" + "".join(f"; {v}" for v in verdicts))

    t0 = time.perf_counter()
    chosen_scores = scores[best["metric"]]
    speed = None
    if target.kind == "speed":
        budget, speed = _meet_speed(model, tokenizer, config, target.value, first_share, chosen_scores, stages)
    else:
        budget = _select(model, config, chosen_scores, first_target)
    timings["select"] = time.perf_counter() - t0
    stages.done(f"plan: {budget.counts} ({budget.prunable_share_removed:.1%} of prunable parameters, "
                f"{budget.flops_share_removed:.1%} of body FLOPs)" + (f"; {budget.reason}" if budget.reason else ""))

    t0 = time.perf_counter()
    reference = copy.deepcopy(model)        # unpruned: the recovery target and the distillation teacher
    note: dict[str, Any] = {"how": "compress", "target": target.describe(), "allocation": config.allocation,
                            "metric": best["metric"], "metrics": budget.metrics, "plan": budget.plan.to_dict()}
    if best["metric"] == RANDOM:
        note["seed"] = best["seed"]
    apply_plan(model, budget.plan, "remove", note=note)
    if config.export:
        from sentinel.export import stock_config

        stock_config(model)      # an inexpressible plan fails now, before recovery and fine-tuning
    stages.done(f"removed: perplexity {measure('pruned', t0):.3f}", perplexities["pruned"])

    recovery = None
    if config.recover != "none":
        t0 = time.perf_counter()
        result = recover(model, reference, batches, method=config.recover)
        recovery = {**result.to_dict(), "calibration": calibration.to_dict()}
        note["recover"] = {k: recovery[k] for k in ("method", "tokens", "ridge", "calibration")}
        stages.done(f"recovered ({config.recover}): perplexity {measure('recovered', t0):.3f}",
                    perplexities["recovered"])
    else:
        stages.done("no recovery")

    finetuned = None
    if config.finetune_steps > 0:
        t0 = time.perf_counter()
        finetuned = _finetune(model, tokenizer, data, config, device, reference, out, report, should_stop)
        note["finetune"] = {"steps": finetuned["steps"], "distill": config.distill}
        stages.done(f"fine-tuned {finetuned['steps']} steps: perplexity {measure('finetuned', t0):.3f}",
                    perplexities["finetuned"])
    else:
        stages.done("no fine-tuning")
    del reference

    t0 = time.perf_counter()
    saved = save_model(model, tokenizer, out / "model", note=note)
    timings["save"] = time.perf_counter() - t0
    stages.done(f"saved to {saved}")
    exported = None
    if config.export:
        from sentinel.export import export_model

        t0 = time.perf_counter()
        exported = export_model(model, tokenizer, out / "export", note=note).to_dict()
        timings["export"] = time.perf_counter() - t0
        stages.done(f"exported to {out / 'export'}")

    summary = {
        # the store's canonical names (one per number, as every run summary uses), then compress's own detail
        "status": "completed", "baseline_perplexity": perplexities["original"],
        "perplexity_pruned": perplexities["pruned"], "perplexity_after": list(perplexities.values())[-1],
        "target": target.describe(), "units": config.units, "allocation": config.allocation,
        "metric": best["metric"], "metric_comparison": comparison, "versus_random": verdicts,
        "budget": {k: v for k, v in budget.to_dict().items() if k != "plan"}, "plan": budget.plan.to_dict(),
        "params_before": before["params"], "params_after": parameter_count(model),
        "prunable_params_before": before["prunable_params"], "prunable_params_after": prunable_params(model),
        "body_flops_before": before["body_flops"],
        "body_flops_after": forward_flops(model, config.seq_len, lm_head=False),
        "perplexity": perplexities, "speed": speed, "recovery": recovery, "finetune": finetuned,
        "model": str(saved), "export": exported, "seconds": timings,
        "wall_seconds": time.perf_counter() - started, "config": config.to_dict(),
    }
    write_file_atomically(out / "result.json", json.dumps(summary, indent=2))
    return summary


def _choose_metric(model: nn.Module, config: CompressConfig, batches: list, target: str, stages: _Stages
                   ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Score with every candidate metric, mask each one's plan in turn and measure the calibration loss; random
    selection is measured the same way once per seed and stands as one row (median loss, its seed's plan)."""
    probe = batches[:config.compare_batches]
    rows, every = [], {}
    for candidate in dict.fromkeys(m for m in config.metrics if m != RANDOM):
        loss, budget, scores = _plan_loss(model, config, batches, probe, target, candidate, config.seed, stages)
        rows.append({"metric": candidate, "per_kind": {k: s.metric for k, s in scores.items()}, "loss": loss,
                     "perplexity": math.exp(loss), "counts": budget.counts})
        every[candidate] = scores
    if config.random_seeds:
        draws = []
        for seed in range(config.seed, config.seed + config.random_seeds):
            loss, budget, scores = _plan_loss(model, config, batches, probe, target, RANDOM, seed, stages)
            draws.append((loss, seed, budget.counts, scores))
        median = statistics.median(loss for loss, *_ in draws)
        loss, seed, counts, scores = sorted(draws, key=lambda d: (d[0], d[1]))[(len(draws) - 1) // 2]   # median_low
        rows.append({"metric": RANDOM, "per_kind": {k: s.metric for k, s in scores.items()}, "loss": median,
                     "perplexity": math.exp(median), "counts": counts, "seed": seed,
                     "perplexity_low": math.exp(min(d[0] for d in draws)),
                     "perplexity_high": math.exp(max(d[0] for d in draws)),
                     "seeds": [{"seed": d[1], "loss": d[0], "perplexity": math.exp(d[0])} for d in draws]})
        every[RANDOM] = scores
        for row in rows[:-1]:
            row["beats_random"] = row["loss"] < median
    return rows, every


def _plan_loss(model: nn.Module, config: CompressConfig, batches: list, probe: list, target: str, candidate: str,
               seed: int, stages: _Stages) -> tuple[float, Any, dict[str, Any]]:
    """One candidate's measure: its scores per unit kind, the budget's plan from them, and the calibration loss on
    `probe` with that plan masked (the model is restored after)."""
    from sentinel.metrics import compute_scores
    from sentinel.pruning.apply import temporarily_masked

    scores = {}
    for kind in config.units:
        name = _metric_for(kind, candidate)
        scores[kind] = compute_scores(model, [name], batches, kind=kind, seed=seed)[name]
        stages.check()
    budget = _select(model, config, scores, target)
    with temporarily_masked(model, budget.plan):
        loss = _calibration_loss(model, probe)
    stages.check()
    return loss, budget, scores


def versus_random(comparison: list[dict[str, Any]]) -> list[str]:
    """One plain line per measured metric against random selection's median over its seeds (calibration
    perplexity of each plan, masked); empty when random was not measured."""
    baseline = next((row for row in comparison if row["metric"] == RANDOM), None)
    if baseline is None:
        return []
    seeds = len(baseline["seeds"])
    median = f"{baseline['perplexity']:.4g}"
    span = f"{baseline['perplexity_low']:.4g}–{baseline['perplexity_high']:.4g}"
    spread = f"median {median} over {seeds} seed{'s' if seeds != 1 else ''}, range {span}"
    lines = []
    if len(comparison) > 1 and min(comparison, key=lambda row: row["loss"]) is baseline:
        lines.append(f"no metric beat random selection: compress uses random seed {baseline['seed']}, the median of "
                     f"{seeds} seed{'s' if seeds != 1 else ''}")
    for row in comparison:
        if row["metric"] == RANDOM:
            continue
        ppl = f"{row['metric']}: {row['perplexity']:.4g}"
        if row["loss"] > baseline["loss"]:
            lines.append(f"{ppl} — worse than random ({spread})")
        elif row["loss"] == baseline["loss"]:
            lines.append(f"{ppl} — level with random ({spread})")
        elif row["perplexity"] >= baseline["perplexity_low"]:
            lines.append(f"{ppl} — better than random's median but inside its range ({spread})")
        else:
            lines.append(f"{ppl} — better than every random seed ({spread})")
    return lines


def _select(model: nn.Module, config: CompressConfig, scores: dict[str, Any], target: str) -> Any:
    from sentinel.pruning.budget import select_budget

    result = select_budget(model, scores, target, allocation=config.allocation, min_heads=config.min_heads,
                           min_neurons=config.min_neurons, whole_kv_groups=True, seq_len=config.seq_len)
    if result.reason:
        logger.warning("Budget: %s.", result.reason)
    return result


def _meet_speed(model: nn.Module, tokenizer: Any, config: CompressConfig, goal: float, share: float,
                scores: dict[str, Any], stages: _Stages) -> tuple[Any, dict[str, Any]]:
    """Step the params share up until a removed copy's median prefill speed ratio (interleaved pairs) meets `goal`."""
    from sentinel.pruning import apply_plan
    from sentinel.evaluation.paired import compare_speed

    limit = getattr(model.config, "max_position_embeddings", None) or config.prompt_tokens + config.new_tokens
    prompt = max(1, min(config.prompt_tokens, limit - config.new_tokens))
    tries = []
    for _ in range(config.speed_iterations):
        budget = _select(model, config, scores, f"params={share:.4f}")
        candidate = copy.deepcopy(model)
        apply_plan(candidate, budget.plan, "remove")
        timed = compare_speed(model, candidate, tokenizer, repeats=config.speed_repeats,
                              prompt_tokens=prompt, new_tokens=config.new_tokens, measure=True)
        del candidate
        row = {"params_share": share, "predicted_speedup": timed.predicted_speedup,
               "prefill": asdict(timed.prefill), "decode": asdict(timed.decode)}
        tries.append(row)
        ratio = timed.prefill.median
        logger.info("speed target %.2fx: params share %.3f measures %s", goal, share, timed.prefill.describe())
        stages.check()
        if ratio >= goal:
            return budget, {"goal": goal, "measured_on": "prefill", "met": True, "tries": tries, **row}
        if share >= MAX_SHARE:
            break
        # time ~ what is left: scale the remaining share by measured/goal, and always step by at least 0.05
        share = min(MAX_SHARE, max(share + 0.05, 1.0 - (1.0 - share) * ratio / goal))
    best = max(tries, key=lambda r: r["prefill"]["median"])
    count = f"{len(tries)} {'try' if len(tries) == 1 else 'tries'}"
    raise CompressError(
        f"speed={goal} was not reached: the best measured prefill speed-up was {best['prefill']['median']:.2f}x "
        f"(range {best['prefill']['low']:.2f}-{best['prefill']['high']:.2f}x over {config.speed_repeats} interleaved "
        f"pairs) at {best['params_share']:.0%} of prunable parameters removed, after {count} up to "
        f"{tries[-1]['params_share']:.0%}; ask for less speed, add units (--units heads,neurons,layers), or raise "
        "--speed-iterations.")


def _finetune(model: nn.Module, tokenizer: Any, data: Any, config: CompressConfig, device: str, reference: nn.Module,
              out: Path, report: Callable[[ProgressEvent], None] | None,
              should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    """Fine-tune the pruned model in place through the same function `sentinel finetune` uses."""
    from sentinel.files import remove_owned_folder
    from sentinel.training.config import FineTuneConfig
    from sentinel.training.finetune import describe_result, finetune

    settings = FineTuneConfig(max_steps=config.finetune_steps, learning_rate=config.learning_rate,
                              batch_size=config.batch_size, block_size=config.seq_len, eval_every=0,
                              eval_max_tokens=config.eval_max_tokens, distill=config.distill, seed=config.seed,
                              device=device)
    result = finetune(model, tokenizer, data, settings, teacher=reference if config.distill else None,
                      on_event=None if report is None else (lambda e: report(ProgressEvent(
                          **{**e.to_dict(), "message": f"fine-tuning step {e.step}/{config.finetune_steps}"}))),
                      should_stop=should_stop, checkpoint_dir=out / "checkpoint")
    if result.stopped == "cancelled":
        raise JobCancelled("compress")
    remove_owned_folder(out / "checkpoint")
    return describe_result(result)


def run_compress_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "compress"; records the summary on the job's experiment."""
    config = CompressConfig.from_dict(params)
    summary = run_compress(config, ctx.device, report=lambda e: ctx.report(e, record_metrics=False),
                           should_stop=lambda: ctx.cancelled)
    if ctx.experiment_id is not None:
        ctx.store.update_experiment(ctx.experiment_id, status="succeeded", summary=summary)
        ctx.store.add_checkpoint(ctx.experiment_id, summary["model"], 0, job_id=ctx.job_id)
        ctx.store.log_metrics(ctx.experiment_id, {f"perplexity_{k}": v for k, v in summary["perplexity"].items()}, 0)
    return summary
