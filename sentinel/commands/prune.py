"""`sentinel prune`: apply a head plan (explicit or from a strategy) and save the pruned model."""

from __future__ import annotations

import argparse
import logging

from typing import TYPE_CHECKING

from sentinel.commands.analyze import add_text_arguments
from sentinel.commands.common import add_model_arguments, print_json, writable_folder
from sentinel.errors import SentinelError

if TYPE_CHECKING:   # heavy modules are imported inside run, so `sentinel --help` stays fast
    from sentinel.pruning.plan import HeadPlan

STRATEGY_HELP = "entropy, magnitude, gradient, random, hybrid, ... (an unknown name lists them all)"

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prune", help="prune heads and save the model", description=__doc__)
    add_model_arguments(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--heads", help='explicit plan, e.g. "0:1,3;5:0" (layer:heads; ...)')
    how.add_argument("--strategy", help=f"choose heads by a metric: {STRATEGY_HELP}")
    p.add_argument("--ratio", type=float, default=None,
                   help="with --strategy: fraction of the active heads to prune, in [0, 1); "
                        "round(ratio x heads), halves rounded down")
    p.add_argument("--scope", choices=["global", "per_layer"], default="global",
                   help="with --strategy: rank heads across the model (global, default) or within each layer")
    p.add_argument("--min-heads", type=int, default=1, help="active heads every layer keeps (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random strategy and masked-LM masking")
    add_text_arguments(p)
    p.add_argument("--mode", choices=["mask", "remove"], default="remove",
                   help="mask (reversible gates) or remove (smaller, faster weights); default remove")
    p.add_argument("--recover", choices=["none", "lstsq", "bias"], default="none",
                   help="with --mode remove: re-fit the output projections on calibration text, no training "
                        "(lstsq: least squares; bias: mean compensation); default none")
    p.add_argument("--calibration-text", default=None,
                   help="text for --recover (same forms as --text; default the bundled train split)")
    p.add_argument("--calibration-samples", type=int, default=128,
                   help="sequences of --seq-len tokens for --recover (default 128; --seq-len default 128)")
    p.add_argument("--out", required=True, help="folder to save the pruned model in")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sentinel.commands.analyze import score_model
    from sentinel.evaluation.size import parameter_count
    from sentinel.models import load_model, save_model
    from sentinel.pruning import mask_heads, parse_plan_text
    from sentinel.pruning.plan import plan_to_json
    from sentinel.pruning.strategies import check_min_heads, get_strategy

    out = writable_folder(args.out)
    if args.min_heads < 0:
        raise SentinelError(f"--min-heads must be 0 or more, got {args.min_heads}.")
    if args.strategy is None and args.ratio is not None:
        raise SentinelError("--ratio goes with --strategy; with --heads the plan itself says what to prune.")
    if args.strategy is not None:
        if args.ratio is None:
            raise SentinelError(f"--strategy {args.strategy} needs --ratio R (fraction of heads to prune, in [0, 1)).")
        strategy = get_strategy(args.strategy, pruning_ratio=args.ratio, min_heads=args.min_heads, seed=args.seed,
                                scope=args.scope, whole_kv_groups=args.mode == "remove")
    else:
        requested = parse_plan_text(args.heads)
    if args.recover != "none" and args.mode != "remove":
        raise SentinelError("--recover re-fits weights after units are removed; use it with --mode remove.")
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    model = loaded.model
    if args.strategy is not None:
        scores, text = score_model(loaded, args, list(strategy.metrics)) if strategy.metrics else ({}, {})
        plan: HeadPlan = strategy.select_heads_to_prune(model, scores)
        note = {"how": "strategy", **strategy.to_dict(), "mode": args.mode, "heads": plan_to_json(plan), **text}
    else:
        check_min_heads(model, requested, args.min_heads)
        plan = requested
        note = {"how": "explicit", "mode": args.mode, "heads": plan_to_json(plan)}
    if not plan:
        logger.warning("The plan is empty (ratio %s rounds to 0 heads); saving the model unchanged.", args.ratio)
    before = parameter_count(model)
    recovery = None
    if args.mode == "remove":
        done, recovery = _remove(loaded, plan, note, args)
    else:
        done = mask_heads(model, plan)
    save_model(model, loaded.tokenizer, out, note=note)
    after = parameter_count(model)
    result = {"pruned": plan_to_json(done), "params_before": before, "params_after": after, "out": str(out)}
    if recovery is not None:
        result["recovery"] = recovery
    if args.json:
        print_json(result)
    else:
        heads = sum(len(v) for v in done.values())
        recovered = "" if recovery is None else (
            f"; recovered ({recovery['method']}, {len(recovery['fits'])} projections, {recovery['tokens']} tokens, "
            f"{recovery['seconds']:.1f}s)")
        verb = "masked" if args.mode == "mask" else "removed"
        print(f"{verb} {heads} heads; parameters {before:,} -> {after:,}{recovered}; saved to {out}")
    return 0


def _remove(loaded, plan: HeadPlan, note: dict, args: argparse.Namespace) -> tuple[HeadPlan, dict | None]:
    """Remove the heads, then (with --recover) re-fit the output projections; the note records the recovery."""
    from sentinel.pruning import remove_heads
    from sentinel.pruning.recovery import CalibrationConfig, prune_and_recover

    method = None if args.recover == "none" else args.recover
    calibration = CalibrationConfig(text=args.calibration_text or "bundled:train", samples=args.calibration_samples,
                                    seq_len=args.seq_len or CalibrationConfig.seq_len)
    done, result = prune_and_recover(loaded.model, loaded.tokenizer, lambda m: remove_heads(m, plan, note=note),
                                     method, calibration)
    if result is None:
        return done, None
    summary = {**result.to_dict(), "calibration": calibration.to_dict()}
    note["recover"] = {k: summary[k] for k in ("method", "tokens", "ridge", "calibration")}
    return done, summary
