"""How much of the perplexity lost to head removal does recovery without training win back?

Bundled model, heads chosen by a strategy (default magnitude, global) at each ratio, removed; then no
recovery, `bias` and `lstsq` (sentinel.pruning.recovery) on calibration text from the bundled train split.
Perplexity on the bundled validation split, windows of 256 (the `sentinel evaluate` protocol). Recovery
wall time: each method is repeated `--runs` times from the same pruned copy, interleaved round by round
(the order rotates), median and spread reported. With --finetune-steps N, each starting point (no recovery,
bias, lstsq) is then fine-tuned N steps (sentinel.training.finetune defaults: AdamW, lr 1e-4, batch 8 x 128,
bundled train split, seed 0) and measured again.
With --units heads,neurons the units come from `select_budget` instead: `params=RATIO` of the prunable
parameters, magnitude scores for every kind, --allocation uniform (default) or global.
Run: python bench/recovery.py [--runs 3] [--threads 1] [--finetune-steps 50] [--units heads,neurons]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from datetime import datetime, timezone

import torch

from sentinel import apply_plan, load_model, remove_heads
from sentinel.data import blocks_from_texts, load_bundled_texts
from sentinel.demo.build import describe_machine
from sentinel.evaluation.perplexity import perplexity
from sentinel.metrics import compute_scores, needs_data
from sentinel.pruning.budget import select_budget
from sentinel.pruning.recovery import CalibrationConfig, calibration_batches, recover
from sentinel.pruning.strategies import get_strategy
from sentinel.training.config import FineTuneConfig
from sentinel.training.finetune import finetune, load_finetune_data

METHODS = ("bias", "lstsq")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ratios", default="0.3,0.5")
    parser.add_argument("--strategy", default="magnitude")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--ridge", type=float, default=1e-3)
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--units", default="heads", help="heads (a strategy's head ranking) or heads,neurons (budget)")
    parser.add_argument("--allocation", choices=["global", "uniform"], default="uniform",
                        help="with --units heads,neurons: how the budget spreads over layers (default uniform)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(None, device="cpu")
    base = loaded.model
    texts = load_bundled_texts("validation")
    blocks = blocks_from_texts(loaded.tokenizer, texts, 256, "bundled:validation", None)

    def ppl(model: torch.nn.Module) -> float:
        return perplexity(model, loaded.tokenizer, blocks.input_ids, seq_len=256).perplexity

    def tuned(start: torch.nn.Module, steps: int) -> torch.nn.Module:
        model = copy.deepcopy(start)
        config = FineTuneConfig(max_steps=steps, eval_every=0, eval_max_tokens=128, device="cpu", seed=0)
        finetune(model, loaded.tokenizer, load_finetune_data(loaded.tokenizer, block_size=config.block_size,
                                                             max_validation_tokens=128), config)
        return model.eval()

    calibration = CalibrationConfig(samples=args.samples, seq_len=args.seq_len)
    batches = calibration_batches(base, loaded.tokenizer, calibration)
    report = {"machine": describe_machine(torch.device("cpu")), "threads": args.threads,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "strategy": args.strategy,
              "calibration": {**calibration.to_dict(), "tokens": int(sum(b["attention_mask"].sum() for b in batches))},
              "ridge": args.ridge, "unpruned_perplexity": ppl(base), "rows": []}
    kinds = {"heads": "head", "neurons": "neuron"}
    units = [kinds[u.strip()] for u in args.units.split(",")]
    if units != ["head"]:
        report.update(units=args.units, allocation=args.allocation, target="params (share of prunable parameters)")
    for ratio in (float(r) for r in args.ratios.split(",")):
        if units != ["head"]:
            if args.strategy != "magnitude":
                raise SystemExit("--units heads,neurons ranks every kind by magnitude here; drop --strategy.")
            pruned = copy.deepcopy(base)
            scores = {k: compute_scores(pruned, ["magnitude"], None, kind=k)["magnitude"] for k in units}
            budget = select_budget(pruned, scores, f"params={ratio}", allocation=args.allocation, whole_kv_groups=True)
            apply_plan(pruned, budget.plan, "remove")
            row = {"ratio": ratio, "counts": budget.counts, "prunable_share_removed": budget.prunable_share_removed,
                   "perplexity": {"none": ppl(pruned)}, "seconds": {m: [] for m in METHODS}, "fits": {}}
            _recover_row(row, pruned, base, batches, args, ppl, report, tuned)
            continue
        strategy = get_strategy(args.strategy, pruning_ratio=ratio, min_heads=1, seed=0, scope="global",
                                whole_kv_groups=True)
        pruned = copy.deepcopy(base)
        if needs_data(list(strategy.metrics)):
            raise SystemExit(f"{args.strategy} needs data; use magnitude or random here.")
        scores = compute_scores(pruned, list(strategy.metrics), None, seed=0) if strategy.metrics else {}
        plan = strategy.select_heads_to_prune(pruned, scores)
        remove_heads(pruned, plan)
        row = {"ratio": ratio, "heads_removed": sum(len(v) for v in plan.values()),
               "perplexity": {"none": ppl(pruned)}, "seconds": {m: [] for m in METHODS}, "fits": {}}
        _recover_row(row, pruned, base, batches, args, ppl, report, tuned)
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)


def _recover_row(row, pruned, base, batches, args, ppl, report, tuned) -> None:
    """Run every method `args.runs` times from the same pruned copy (interleaved), measure, append the row."""
    starts = {"none": pruned}
    for run in range(args.runs):
        order = METHODS if run % 2 == 0 else METHODS[::-1]
        for method in order:
            candidate = copy.deepcopy(pruned)
            start = time.perf_counter()
            result = recover(candidate, base, batches, method=method, ridge=args.ridge)
            row["seconds"][method].append(time.perf_counter() - start)
            if run == 0:
                row["perplexity"][method] = ppl(candidate)
                row["fits"][method] = len(result.fits)
                starts[method] = candidate
    gap = row["perplexity"]["none"] - report["unpruned_perplexity"]
    row["gap_closed"] = {m: (row["perplexity"]["none"] - row["perplexity"][m]) / gap for m in METHODS}
    row["median_seconds"] = {m: statistics.median(v) for m, v in row["seconds"].items()}
    if args.finetune_steps:
        row["finetune_steps"] = args.finetune_steps
        row["after_finetune"] = {name: ppl(tuned(start, args.finetune_steps)) for name, start in starts.items()}
    report["rows"].append(row)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
