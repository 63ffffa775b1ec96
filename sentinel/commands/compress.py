"""`sentinel compress`: give a target (params=0.5, flops=0.5 or speed=1.8) and get the best model that meets it.

It measures the original, picks the importance metric from a short measured comparison on calibration text
(random selection, with --random-seeds seeds, is measured beside the metrics and the report says which lose to it),
selects units with the budget (or, for speed, steps the parameter share up until interleaved timings meet the
target), removes them, recovers (lstsq / bias), optionally fine-tunes (--finetune-steps, --distill), saves to
OUT/model (and with --export a stock Hugging Face folder in OUT/export) and writes OUT/result.json. It runs as
a background job recorded in the experiment store: `sentinel jobs cancel ID` (or Ctrl-C) stops it.
"""

from __future__ import annotations

import argparse

from sentinel.commands.common import add_model_arguments, print_json
from sentinel.errors import SentinelError

UNIT_NAMES = {"heads": "head", "neurons": "neuron", "layers": "layer"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compress", help="prune to a params / FLOPs / speed target, recover, save",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--target", required=True, help="params=0.5 (share of prunable parameters to remove), flops=0.5 "
                                                   "(share of body FLOPs) or speed=1.8 (measured prefill speed-up)")
    p.add_argument("--units", default="heads,neurons",
                   help="unit kinds: heads, neurons, layers (default heads,neurons)")
    p.add_argument("--allocation", choices=["global", "uniform"], default="global",
                   help="rank units across layers (global, default) or remove the same count per layer (uniform; "
                        "needed for --export of neurons)")
    p.add_argument("--recover", choices=["none", "bias", "lstsq"], default="lstsq",
                   help="re-fit the output projections on calibration text after removal (default lstsq)")
    p.add_argument("--metrics", default="magnitude,gradient",
                   help="candidate importance metrics compared on calibration text (default magnitude,gradient)")
    p.add_argument("--random-seeds", type=int, default=3,
                   help="also measure random selection with this many seeds (seed, seed+1, ...), the baseline every "
                        "metric must beat; its median stands in the comparison (default 3; 0 skips it)")
    p.add_argument("--calibration-text", default=None, help="text for the metric comparison, data metrics and "
                                                           "recovery (default a model folder's own train split, else the "
                                                           "bundled one)")
    p.add_argument("--calibration-samples", type=int, default=128, help="calibration sequences (default 128)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--text", default=None, help="fine-tuning text (default a model folder's own train split, "
                   "else the bundled one)")
    p.add_argument("--validation-text", default=None, help="perplexity text (default a model folder's own validation "
                   "split, else the bundled one)")
    p.add_argument("--eval-tokens", type=int, default=16384, help="validation tokens per perplexity (default 16384)")
    p.add_argument("--finetune-steps", type=int, default=0, help="fine-tuning steps after recovery (default 0)")
    p.add_argument("--distill", action="store_true", help="with --finetune-steps: distil from the unpruned model")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="fine-tuning batch size (default 8)")
    p.add_argument("--min-heads", type=int, default=1, help="active heads every layer keeps (default 1)")
    p.add_argument("--min-neurons", type=int, default=1, help="active neurons every layer keeps (default 1)")
    p.add_argument("--speed-repeats", type=int, default=5, help="speed target: interleaved timing pairs (default 5)")
    p.add_argument("--speed-iterations", type=int, default=5,
                   help="speed target: most parameter shares tried (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed for random metrics and fine-tuning (default 0)")
    p.add_argument("--export", action="store_true", help="also write a stock Hugging Face folder to OUT/export")
    p.add_argument("--out", required=True, help="run folder: OUT/model, OUT/export, OUT/result.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _units(text: str) -> list[str]:
    names = [u.strip() for u in text.split(",") if u.strip()]
    unknown = [u for u in names if u not in UNIT_NAMES]
    if unknown or not names:
        raise SentinelError(f"Unknown unit kind {', '.join(unknown) or '(none)'}; choose from heads, neurons, layers.")
    return [UNIT_NAMES[u] for u in dict.fromkeys(names)]


def run(args: argparse.Namespace) -> int:
    from sentinel.commands.jobrun import output_folder, run_in_foreground
    from sentinel.store import Store
    from sentinel.workflows.compress import CompressConfig

    config = CompressConfig(
        out=args.out, target=args.target, model=args.model, units=_units(args.units), allocation=args.allocation,
        recover=args.recover, metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
        random_seeds=args.random_seeds,
        calibration_text=args.calibration_text, calibration_samples=args.calibration_samples, seq_len=args.seq_len,
        text=args.text, validation_text=args.validation_text, eval_max_tokens=args.eval_tokens,
        finetune_steps=args.finetune_steps, distill=args.distill, learning_rate=args.lr, batch_size=args.batch_size,
        export=args.export, min_heads=args.min_heads, min_neurons=args.min_neurons, speed_repeats=args.speed_repeats,
        speed_iterations=args.speed_iterations, seed=args.seed, dtype=args.dtype)
    config.validate()                      # bad input: one line, exit 2, before anything is loaded or written
    config.out = str(output_folder(args.out))
    store = Store()
    experiment = store.create_experiment(f"compress {args.model or 'bundled model'} to {args.target}",
                                         config.to_dict(), kind="compress", model=args.model)
    record, stopped = run_in_foreground(store, "compress", config.to_dict(), args.device, experiment, "compressing",
                                        unit="stage")
    if record.state == "failed":
        return 1
    if record.state == "cancelled":
        print(f"compress job {record.id} was cancelled; nothing was saved", flush=True)
        return 130 if stopped else 1
    summary = {**(record.result or {}), "experiment": experiment, "job": record.id}
    if args.json:
        print_json(summary)
    else:
        print(_describe(summary))
    return 0


def _describe(s: dict) -> str:
    ppl = s["perplexity"]
    stages = " -> ".join(f"{k} {v:.3f}" for k, v in ppl.items())
    speed = ""
    if s.get("speed"):
        p = s["speed"]["prefill"]
        speed = (f"; prefill {p['median']:.2f}x (range {p['low']:.2f}-{p['high']:.2f}x, {p['pairs']} interleaved "
                 f"pairs; predicted {s['speed']['predicted_speedup']:.2f}x)")
    return (f"{s['target']} with {_chosen(s)} scores: parameters {s['params_before']:,} -> {s['params_after']:,}, "
            f"body FLOPs {s['body_flops_before']:,} -> {s['body_flops_after']:,}{speed}; perplexity {stages}; "
            f"{s['wall_seconds']:.1f}s; saved to {s['model']}"
            + (f" and {s['export']['path']}" if s.get("export") else "")
            + (f"; note: {s['budget']['reason']}" if s["budget"].get("reason") else "")
            + _comparison(s))


def _chosen(s: dict) -> str:
    """The chosen metric, with its seed when it is random selection."""
    row = next((r for r in s.get("metric_comparison", []) if r["metric"] == s["metric"]), {})
    return f"{s['metric']} (seed {row['seed']})" if "seed" in row else s["metric"]


def _comparison(s: dict) -> str:
    """The measured metric comparison, then each metric against random selection, one line each."""
    rows = s.get("metric_comparison") or []
    if not rows:
        return ""
    measured = ", ".join(f"{r['metric']} {r['perplexity']:.4g}" + (" (median)" if "seeds" in r else "")
                         for r in rows)
    lines = [f"metric comparison (calibration perplexity with each plan masked): {measured}"]
    return "\n" + "\n".join(lines + [f"  {line}" for line in s.get("versus_random") or []])
