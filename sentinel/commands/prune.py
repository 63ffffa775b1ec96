"""`sentinel prune`: apply a head plan (explicit or from a strategy) and save the pruned model."""

from __future__ import annotations

import argparse

from sentinel.commands.common import add_model_arguments, print_json, writable_folder
from sentinel.evaluation.size import parameter_count
from sentinel.models import load_model, save_model
from sentinel.pruning import mask_heads, parse_plan_text, remove_heads
from sentinel.pruning.plan import plan_to_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prune", help="prune heads and save the model", description=__doc__)
    add_model_arguments(p)
    p.add_argument("--heads", help='explicit plan, e.g. "0:1,3;5:0" (layer:heads; ...)')
    p.add_argument("--mode", choices=["mask", "remove"], default="remove",
                   help="mask (reversible gates) or remove (smaller, faster weights); default remove")
    p.add_argument("--out", required=True, help="folder to save the pruned model in")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = writable_folder(args.out)
    if not args.heads:
        raise_usage("give --heads")
    plan = parse_plan_text(args.heads)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    before = parameter_count(loaded.model)
    apply = remove_heads if args.mode == "remove" else mask_heads
    done = apply(loaded.model, plan)
    note = {"how": "explicit", "mode": args.mode, "heads": plan_to_json(plan)}
    save_model(loaded.model, loaded.tokenizer, out, note=note)
    after = parameter_count(loaded.model)
    result = {"pruned": plan_to_json(done), "params_before": before, "params_after": after, "out": str(out)}
    if args.json:
        print_json(result)
    else:
        heads = sum(len(v) for v in done.values())
        print(f"{args.mode}d {heads} heads; parameters {before:,} -> {after:,}; saved to {out}")
    return 0


def raise_usage(message: str) -> None:
    from sentinel.cli import UsageError

    raise UsageError(f"sentinel prune: {message}")
