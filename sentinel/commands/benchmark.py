"""`sentinel benchmark`: every strategy x pruning level -> prune, evaluate, fine-tune, evaluate again.

Writes results.csv, results.json and charts (perplexity.html/png, speed.html/png) into --out, records every
cell in the experiment store, shows a progress bar; Ctrl-C stops after the current step and keeps what is done.
"""

from __future__ import annotations

import argparse
import json

from typing import TYPE_CHECKING

from sentinel.commands.common import add_model_arguments, finetune_settings, print_json
from sentinel.errors import SentinelError

if TYPE_CHECKING:   # heavy modules are imported inside run, so `sentinel --help` stays fast
    from sentinel.workflows.benchmark import BenchmarkResult


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("benchmark", help="compare pruning strategies across pruning levels",
                              description=__doc__)
    add_model_arguments(p)
    p.add_argument("--strategies", default="entropy,magnitude,gradient,random",
                   help="comma-separated strategies (default entropy,magnitude,gradient,random)")
    p.add_argument("--levels", default="0.1,0.3,0.5",
                   help="comma-separated shares to prune, each in [0, 1): of the active heads, or with --units other "
                        "than heads (or --allocation uniform) of the body's prunable parameters")
    p.add_argument("--units", default="heads", help="unit kinds to prune: heads, neurons, layers (default heads); "
                                                    "the strategy names the metric for every kind that has it")
    p.add_argument("--allocation", choices=["global", "uniform"], default="global",
                   help="budgets: rank units across layers (global) or the same count per layer (uniform)")
    p.add_argument("--steps", type=int, required=True, help="fine-tuning steps after pruning (at least 1)")
    p.add_argument("--distill", action="store_true", help="also fine-tune each pruned model by distillation")
    p.add_argument("--mode", choices=["mask", "remove"], default="remove",
                   help="remove heads (smaller, faster; default) or mask them")
    p.add_argument("--text", default=None, help="training text (default: the bundled corpus and its validation split)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--block-size", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--eval-tokens", type=int, default=8192, help="validation tokens per perplexity (default 8192)")
    p.add_argument("--analysis-samples", type=int, default=16,
                   help="sequences the strategies' metrics are computed on (default 16)")
    p.add_argument("--speed-runs", type=int, default=3, help="timed runs per speed measurement (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--out", required=True, help="folder for results.csv, results.json and the charts")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _levels(text: str) -> list[float]:
    levels = []
    for part in (p.strip() for p in text.split(",")):
        try:
            levels.append(float(part))
        except ValueError:
            raise SentinelError(f"Pruning level {part!r} is not a number; give fractions such as 0.1,0.3,0.5.") from None
    return levels


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sentinel.commands.jobrun import output_folder, run_in_foreground
    from sentinel.workflows.benchmark import BenchmarkConfig, BenchmarkResult
    from sentinel.store import Store

    tune = {k: v for k, v in finetune_settings(args).items() if k != "distill"}   # --distill adds an arm
    config = BenchmarkConfig(
        out=args.out, strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
        levels=_levels(args.levels), steps=args.steps, distill=args.distill, model=args.model, text=args.text,
        mode=args.mode, finetune=replace(BenchmarkConfig(out=args.out).finetune, **tune),
        analysis_samples=args.analysis_samples, speed_runs=args.speed_runs, dtype=args.dtype,
        units=[u.strip() for u in args.units.split(",") if u.strip()], allocation=args.allocation,
    )
    config.validate()
    out = output_folder(args.out)
    config.out = str(out)
    store = Store()
    experiment = store.create_experiment(f"benchmark {args.strategies} at {args.levels}", config.to_dict(),
                                         kind="benchmark", model=args.model)
    record, stopped = run_in_foreground(store, "benchmark", config.to_dict(), args.device, experiment, "benchmark",
                                        unit="unit")
    if record.state == "failed":
        return 1
    result = BenchmarkResult.from_dict(json.loads((out / "results.json").read_text(encoding="utf-8")))
    if args.json:
        print_json(result.to_dict())
    else:
        print(format_table(result))
        print(verdict(result))
        print(f"wrote results.csv, results.json, perplexity.html/png and speed.html/png to {out}")
    return 130 if stopped else 0


def format_table(result: BenchmarkResult) -> str:
    """The results as a fixed-width text table, the unpruned baseline first."""
    base = result.baseline
    lines = [f"unpruned: perplexity {base['perplexity']:.3f}, {base['params']:,} parameters, "
             f"decode {base['decode_tokens_per_s']:.0f} tok/s",
             f"{'strategy':<10} {'level':>5} {'heads':>5} {'params':>10} {'pruned':>9} {'tuned':>9} {'distilled':>9} "
             f"{'decode/s':>8}"]
    for row in result.rows:
        distilled = "" if row["perplexity_distilled"] is None else f"{row['perplexity_distilled']:.3f}"
        lines.append(f"{row['strategy']:<10} {row['level']:>5.0%} {row['heads_pruned']:>5} {row['params']:>10,} "
                     f"{row['perplexity_pruned']:>9.3f} {row['perplexity_finetuned']:>9.3f} {distilled:>9} "
                     f"{row['decode_tokens_per_s']:>8.0f}")
    return "\n".join(lines)


def verdict(result: BenchmarkResult) -> str:
    """One plain sentence per measured stage: which strategy has the lowest mean perplexity, and by how much."""
    names = {"perplexity_pruned": "right after pruning", "perplexity_finetuned": "after fine-tuning",
             "perplexity_distilled": "after distillation"}
    lines = []
    for column, stage in names.items():
        means = result.winners.get(column, {}).get("mean_over_levels")
        if not means:
            continue
        ranked = list(means.items())
        best, best_value = ranked[0]
        if len(ranked) > 1:
            second, second_value = ranked[1]
            lines.append(f"{stage}: {best} wins with mean perplexity {best_value:.3f} over the levels, "
                         f"{100 * (second_value / best_value - 1):.1f}% below {second} ({second_value:.3f})")
        else:
            lines.append(f"{stage}: {best} mean perplexity {best_value:.3f}")
    return "\n".join(lines)
