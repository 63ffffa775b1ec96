"""`sentinel sensitivity`: prune each body matrix alone (default 10% and 50%, magnitude), measure the perplexity
change, restore it exactly; print the table and a suggested per-matrix sparsity that protects sensitive ones.

`--out FILE.json` keeps the table and the suggestion (feed it to `sentinel sparsify --per-matrix`);
`--chart FILE.html` writes the layer x matrix heatmap.
"""

from __future__ import annotations

import argparse
import json

from sentinel.commands.common import add_model_arguments, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sensitivity` sub-command."""
    p = subparsers.add_parser("sensitivity", help="perplexity change with each weight matrix pruned alone",
                              description=__doc__)
    add_model_arguments(p)
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.1, 0.5],
                   help="sparsity levels to probe, each in (0, 1) (default 0.1 0.5)")
    p.add_argument("--method", default="l1", help="l1 (default), l2 or random masks")
    p.add_argument("--average", type=float, default=0.5,
                   help="average sparsity of the suggested per-matrix plan (default 0.5)")
    p.add_argument("--text", default=None, help="evaluation text (default: the bundled validation split)")
    p.add_argument("--eval-tokens", type=int, default=4096, help="evaluation tokens per probe (default 4096)")
    p.add_argument("--out", default=None, help="write the table and suggestion as JSON to this file")
    p.add_argument("--chart", default=None, help="write the Altair heatmap as HTML to this file")
    p.add_argument("--overwrite", action="store_true", help="with --out/--chart: replace files that exist")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Probe every matrix, print the table, write the files asked for; returns the exit code."""
    from sentinel.sparsity.targets import SparsityError

    if any(not 0 < s < 1 for s in args.sparsity):
        raise SparsityError(f"--sparsity levels must be in (0, 1), got {args.sparsity}.")
    if not 0 <= args.average < 1:
        raise SparsityError(f"--average must be in [0, 1), got {args.average}.")
    if args.eval_tokens < 2:
        raise SparsityError(f"--eval-tokens must be at least 2, got {args.eval_tokens}.")
    from sentinel.files import check_new_file, write_file_atomically

    out = check_new_file(args.out, overwrite=args.overwrite) if args.out else None       # checked before the work
    chart_path = check_new_file(args.chart, overwrite=args.overwrite) if args.chart else None
    from sentinel.models import load_model
    from sentinel.sparsity.sensitivity import layer_sensitivity, sensitivity_chart, suggest_sparsity
    from sentinel.models.positions import cap_to_positions
    from sentinel.sparsity.text import evaluator

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    evaluate, text = evaluator(loaded.tokenizer, args.text, seq_len=cap_to_positions(loaded.model, 256),
                               max_tokens=args.eval_tokens)
    result = layer_sensitivity(loaded.model, evaluate, levels=sorted(args.sparsity), method=args.method)
    suggestion = suggest_sparsity(result, average=args.average)
    data = {"model": loaded.source, "evaluation": text, **result.to_dict(), "suggestion": suggestion,
            "suggestion_average": args.average}
    if out is not None:
        write_file_atomically(out, json.dumps(data, indent=2))
    if chart_path is not None:
        write_file_atomically(chart_path, sensitivity_chart(result).to_html())
    if args.json:
        print_json(data)
        return 0
    print(f"baseline perplexity {result.baseline:.3f} on {text['text']} ({text['tokens']:,} tokens)")
    levels = result.levels
    print(f"{'matrix':<36}" + "".join(f"{'Δppl@' + format(s, '.0%'):>12}" for s in levels) + f"{'suggested':>11}")
    by_name: dict[str, dict[float, float]] = {}
    for row in result.rows:
        by_name.setdefault(row.name, {})[row.sparsity] = row.delta
    for name, deltas in by_name.items():
        print(f"{name:<36}" + "".join(f"{deltas[s]:>+12.3f}" for s in levels) + f"{suggestion[name]:>11.0%}")
    return 0
