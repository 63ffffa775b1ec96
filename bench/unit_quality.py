"""Which unit kinds and which allocation keep the most quality per parameter removed?

On the bundled model, for 10/30/50% of the body's prunable parameters: heads only, neurons only,
heads + neurons (global allocation) and heads + neurons (uniform). For each arm every candidate metric
is tried and the one with the lowest perplexity right after pruning is kept ("best metric"); that model
is then fine-tuned for --steps steps (the benchmark's settings: lr 1e-4, batch 8 x 128 tokens) and
measured again. Perplexity is on the bundled validation split (first --eval-tokens tokens).
Run: python bench/unit_quality.py [--steps 50] [--threads 1] [--out bench/results/unit-quality.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from sentinel import apply_plan, load_model
from sentinel.metrics import compute_scores
from sentinel.pruning.budget import select_budget
from sentinel.workflows.steps import analysis_batches, validation_perplexity
from sentinel.training.config import FineTuneConfig
from sentinel.training.finetune import finetune, load_finetune_data

ARMS = {
    "heads only": (("head",), "global", [("magnitude",), ("gradient",)]),
    "neurons only": (("neuron",), "global", [("magnitude",), ("activation",), ("wanda",), ("gradient",)]),
    "heads + neurons, global": (("head", "neuron"), "global",
                                [("magnitude", "magnitude"), ("gradient", "gradient"), ("gradient", "wanda")]),
    "heads + neurons, uniform": (("head", "neuron"), "uniform",
                                 [("magnitude", "magnitude"), ("gradient", "gradient"), ("gradient", "wanda")]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="0.1,0.3,0.5")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="bench/results/unit-quality.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(None, device="cpu")
    base, tokenizer = loaded.model, loaded.tokenizer
    data = load_finetune_data(tokenizer, None, 128, max_validation_tokens=args.eval_tokens)
    batches = analysis_batches(data.train, 16, 8, loaded.device)
    metrics = {kind: sorted({m for kinds, _, combos in ARMS.values() for c in combos
                             for k, m in zip(kinds, c) if k == kind}) for kind in ("head", "neuron")}
    scores = {kind: compute_scores(base, names, batches, kind=kind) for kind, names in metrics.items()}
    baseline = validation_perplexity(base, tokenizer, data)
    config = FineTuneConfig(max_steps=args.steps, learning_rate=1e-4, batch_size=8, block_size=128, eval_every=0,
                            eval_max_tokens=args.eval_tokens, seed=0, device="cpu")
    rows = []
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"baseline perplexity {baseline:.2f}")
    for level in (float(v) for v in args.levels.split(",")):
        for arm, (kinds, allocation, combos) in ARMS.items():
            best = None
            for combo in combos:
                chosen = {k: scores[k][m] for k, m in zip(kinds, combo)}
                result = select_budget(base, chosen, f"params={level}", allocation=allocation, whole_kv_groups=True)
                model = copy.deepcopy(base)
                apply_plan(model, result.plan, "remove")
                ppl = validation_perplexity(model, tokenizer, data)
                if best is None or ppl < best[0]:
                    best = (ppl, combo, result, model)
            ppl, combo, result, model = best
            start = time.perf_counter()
            tuned = finetune(model, tokenizer, data, config)
            row = {"level": level, "arm": arm, "metrics": "+".join(combo), "counts": result.counts,
                   "prunable_share_removed": round(result.prunable_share_removed, 4),
                   "total_share_removed": round(result.total_share_removed, 4), "exact": result.exact,
                   "reason": result.reason, "perplexity_pruned": round(ppl, 2),
                   "perplexity_finetuned": round(tuned.perplexity_after, 2),
                   "finetune_seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(json.dumps(row))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"baseline_perplexity": baseline, "steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
