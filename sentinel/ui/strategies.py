"""Which strategy hurts least, on this model: mask the same share of heads with every strategy (random with
several seeds) and measure each result with the app's one perplexity protocol; rank and recommend.

Runs as the background job kind "strategy-compare". Scores are computed once on the session's model from
the bundled corpus's *train* split (the perplexity is measured on the validation split, so no strategy sees
the text it is judged on); each strategy then masks its share on a fresh copy of that model.
"""

from __future__ import annotations

import copy
import logging
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from sentinel.data import calibration_text_for, load_text_blocks
from sentinel.errors import DataError
from sentinel.jobs import JobContext, JobManager, ProgressEvent
from sentinel.metrics import compute_scores
from sentinel.metrics.batches import prepare_batches
from sentinel.models import save_model
from sentinel.models.loading import pruning_record
from sentinel.pruning import active_heads, mask_heads
from sentinel.pruning.strategies import get_strategy, strategy_class, strategy_names
from sentinel.store import ExperimentRecord, Store, sentinel_home
from sentinel.ui.analysis import score_source
from sentinel.ui.format import plural
from sentinel.ui.history import readable, significant
from sentinel.ui.job_copies import input_copy_params, load_job_copy, staged_copies
from sentinel.ui.protocol import EVAL_PROTOCOL, protocol_perplexity
from sentinel.ui.session import WorkingModel

logger = logging.getLogger(__name__)

JOB_KIND = "strategy-compare"
RUNS = "strategy-compare"
DEFAULT_STRATEGY = "entropy"          # the seeds' rule: the Prune page's default


@dataclass
class CompareRequest:
    """The share to mask, the rule every strategy follows, and how many random seeds."""

    ratio: float = 0.3
    min_heads: int = 1
    scope: str = "global"
    random_seeds: int = 3
    score_tokens: int = 1024
    score_block: int = 128

    def validate(self) -> None:
        if not 0 < self.ratio < 1:
            raise DataError(f"The share to prune must be between 0 and 1, got {self.ratio}.")
        if self.random_seeds < 1:
            raise DataError("Compare with at least one random seed.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StrategyResult:
    """One strategy's masked model: how many heads it pruned and its protocol perplexity."""

    strategy: str
    seed: int | None
    pruned: int
    total: int
    perplexity: float
    tokens: int

    @property
    def label(self) -> str:
        return self.strategy if self.seed is None else f"{self.strategy} (seed {self.seed})"


@dataclass
class Comparison:
    """All strategies' results on one model, with the unpruned perplexity for reference."""

    ratio: float
    baseline: float
    results: list[StrategyResult] = field(default_factory=list)
    prior_steps: int = 0        # pruning steps the compared model already had: its baseline is not "unpruned"

    @property
    def reference(self) -> str:
        """What the baseline is: 'unpruned', or the current model with its earlier steps."""
        if not self.prior_steps:
            return "unpruned"
        return f"for your current model (already pruned in {plural(self.prior_steps, 'step')})"

    def table(self) -> pd.DataFrame:
        """Ranked by perplexity (lower hurts less): rank, strategy, heads pruned, perplexity, rise over unpruned."""
        ranked = sorted(self.results, key=lambda r: (r.perplexity, r.label))
        rows = [{"rank": i + 1, "strategy": r.label, "heads pruned": f"{r.pruned} of {r.total} = {r.pruned / r.total:.0%}",
                 "perplexity": significant(r.perplexity), "rise": f"{(r.perplexity / self.baseline - 1):+.1%}"}
                for i, r in enumerate(ranked)]
        return pd.DataFrame(rows)

    def random_spread(self) -> tuple[float, float, float] | None:
        """Random's (lowest, median, highest) perplexity over its seeds: the noise a rule must beat (None: no seeds)."""
        values = sorted(r.perplexity for r in self.results if r.strategy == "random")
        return (values[0], statistics.median(values), values[-1]) if values else None

    def recommendation(self) -> str:
        """Plain words: the lowest perplexity, random's spread over seeds beside it, and whether the best and the
        default (entropy) rule fall inside that spread (then no winner is named: the margin is within chance)."""
        best = min(self.results, key=lambda r: (r.perplexity, r.label))
        spread = self.random_spread()
        seeds = sum(r.strategy == "random" for r in self.results)
        if spread is None:
            return (f"On this model, masking {best.pruned} of {best.total} heads with **{best.label}** gives the "
                    f"lowest perplexity: {readable(best.perplexity)} against {readable(self.baseline)} {self.reference} "
                    "(no random seeds to judge the margin by).")
        low, median, high = spread
        noise = (f"random's spread over {seeds} seed{'s' if seeds != 1 else ''}: {readable(low)}–{readable(high)}, "
                 f"median {readable(median)}")
        winner = best.strategy != "random" and best.perplexity < low
        if not winner:
            text = (f"On this model, no strategy clearly hurts least: the lowest perplexity, "
                    f"{readable(best.perplexity)} (**{best.label}**, against {readable(self.baseline)} {self.reference}), "
                    f"is within {noise}.")
        else:
            text = (f"On this model, masking {best.pruned} of {best.total} heads with **{best.label}** hurts least: "
                    f"perplexity {readable(best.perplexity)} against {readable(self.baseline)} {self.reference}, below "
                    f"{noise}.")
        default = next((r for r in self.results if r.strategy == DEFAULT_STRATEGY), None)
        if default is not None and default is not best:
            value, rule = readable(default.perplexity), f"The {DEFAULT_STRATEGY} rule (the default)"
            if default.perplexity > high:
                text += (f" {rule} does worse than picking heads at random: {value}, above every random seed."
                         + (f" Prefer {best.label} here." if winner else ""))
            elif default.perplexity >= low:
                text += f" {rule}, {value}, is within random's spread: no better than picking heads at random here."
            else:
                text += f" {rule} beats every random seed here ({value})."
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "baseline": self.baseline, "results": [asdict(r) for r in self.results],
                "prior_steps": self.prior_steps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        return cls(data["ratio"], data["baseline"], [StrategyResult(**r) for r in data["results"]],
                   int(data.get("prior_steps", 0)))


def ranking_of(record: ExperimentRecord) -> pd.DataFrame | None:
    """The strategy ranking a recorded comparison run holds (`Comparison.table`), or None for any other run or one
    that finished without results."""
    data = record.summary.get("comparison") if record.kind == JOB_KIND else None
    if not isinstance(data, dict) or not data.get("results"):
        return None
    return Comparison.from_dict(data).table()


def compare_strategies(model: Any, tokenizer: Any, request: CompareRequest,
                       report: Any = None, should_stop: Any = None) -> Comparison:
    """Mask `request.ratio` of the active heads with every strategy on copies of `model`; measure each."""
    request.validate()
    names = strategy_names()
    runs = [(name, None) for name in names if name != "random"]
    runs += [("random", seed) for seed in range(request.random_seeds)] if "random" in names else []
    needed = sorted({score_source(m) for name, _ in runs for m in strategy_class(name).metrics})
    total = sum(len(h) for h in active_heads(model).values())
    steps = len(runs) + 2
    tell = report or (lambda event: None)
    tell(ProgressEvent(step=0, total_steps=steps, message="Scoring every head"))
    source = calibration_text_for(getattr(model.config, "name_or_path", None) or None)   # the model's own text
    blocks = load_text_blocks(tokenizer, source, request.score_block, max_tokens=request.score_tokens)
    batches = prepare_batches(blocks.dataloader(batch_size=4))
    scores = compute_scores(model, needed, batches, loss_data=batches) if needed else {}
    baseline = protocol_perplexity(model, tokenizer).perplexity
    comparison = Comparison(request.ratio, baseline, prior_steps=len(pruning_record(model).get("history", [])))
    tell(ProgressEvent(step=2, total_steps=steps, message="Measured the model before this comparison's masks"))
    for index, (name, seed) in enumerate(runs, start=3):
        if should_stop is not None and should_stop():
            break
        chooser = get_strategy(name, pruning_ratio=request.ratio, min_heads=request.min_heads, seed=seed or 0,
                               scope=request.scope)
        candidate = copy.deepcopy(model)
        plan = chooser.select_heads_to_prune(candidate, dict(scores))
        done = mask_heads(candidate, plan)
        ppl = protocol_perplexity(candidate, tokenizer)
        result = StrategyResult(name, seed, sum(len(h) for h in done.values()), total, ppl.perplexity,
                                ppl.tokens_evaluated)
        comparison.results.append(result)
        tell(ProgressEvent(step=index, total_steps=steps,
                           message=f"{result.label}: perplexity {readable(ppl.perplexity)}"))
        logger.info("Strategy %s: %d heads, perplexity %.3f", result.label, result.pruned, result.perplexity)
    return comparison


def start_comparison(jobs: JobManager, store: Store, working: WorkingModel, request: CompareRequest,
                     device: str = "auto") -> str:
    """Save the session's model, record an experiment and queue the comparison; returns the job id."""
    request.validate()
    name = f"compare strategies at {request.ratio:.0%} ({request.random_seeds} random seeds)"
    experiment = store.create_experiment(name, {**request.to_dict(), "base_model": working.base.source,
                                                "dashboard_steps": working.history()},
                                         kind=JOB_KIND, model=working.base.source)
    with staged_copies(sentinel_home() / RUNS / experiment / "start") as folder:
        start = save_model(working.model, working.tokenizer, folder, note={"dashboard_steps": working.history()})
        return jobs.submit(JOB_KIND, input_copy_params({"model": str(start), "request": request.to_dict()}, start),
                           device=device, experiment_id=experiment)


def run_strategy_compare_job(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Job-manager entry point for kind "strategy-compare"; the comparison goes into the experiment's summary.
    The start copy the page saved is removed by the job manager when the job ends (`input_copy_params`)."""
    loaded = load_job_copy(params["model"], ctx.device, "Prune")
    request = CompareRequest(**params["request"])
    comparison = compare_strategies(loaded.model, loaded.tokenizer, request,
                                    report=lambda event: ctx.report(event, record_metrics=False),
                                    should_stop=lambda: ctx.cancelled)
    summary = {"comparison": comparison.to_dict(), "protocol": EVAL_PROTOCOL.describe(),
               "recommendation": comparison.recommendation() if comparison.results else None}
    if ctx.experiment_id is not None:
        ctx.store.update_experiment(ctx.experiment_id, status="cancelled" if ctx.cancelled else "completed",
                                    summary=summary)
    return summary
