"""`sentinel prune`: apply a plan of heads, neurons and layers (explicit, from a strategy, or from a budget) and save.

Three ways to say what goes:
- explicit: --heads "0:1,3;5:0" --neurons "0:5,17;3:2" --layers "4,7:mlp" (any combination);
- a head strategy: --strategy NAME --ratio R (a fraction of the active heads, as before);
- a budget: --units heads,neurons --target params=0.5 [--allocation global|uniform] [--strategy NAME];
  --target speedup=1.5 is a speed-up predicted from the body's FLOPs (it removes 1 - 1/1.5 of them); time the
  result with `sentinel benchmark` to see the measured one.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from sentinel.commands.analyze import add_text_arguments
from sentinel.commands.common import add_model_arguments, print_json, writable_folder
from sentinel.errors import SentinelError

logger = logging.getLogger(__name__)

UNIT_NAMES = {"heads": "head", "neurons": "neuron", "layers": "layer"}
DEFAULT_BUDGET_METRIC = {"head": "magnitude", "neuron": "magnitude", "layer": "block_influence"}
STRATEGY_HELP = "entropy, gradient, hybrid, loss_impact, magnitude, random (or a registered name)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prune", help="prune heads, neurons or layers and save the model", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--heads", help='explicit heads, e.g. "0:1,3;5:0" (layer:heads; ...)')
    how.add_argument("--strategy", help=f"choose units by a metric: {STRATEGY_HELP}; with --units it names the "
                                        "metric for every kind that has it (default magnitude, block_influence "
                                        "for layers)")
    p.add_argument("--neurons", help='explicit MLP neurons, e.g. "0:5,17;3:2" (layer:neurons; ...)')
    p.add_argument("--layers", help='explicit layers, e.g. "4,7:mlp" (a bare layer is its whole block; '
                                    "parts: attention, mlp)")
    p.add_argument("--ratio", type=float, default=None,
                   help="with --strategy alone: fraction of the active heads to prune, in [0, 1); "
                        "round(ratio x heads), halves rounded down")
    p.add_argument("--units", default=None, help="budget: unit kinds to choose from, e.g. heads,neurons "
                                                 "(heads, neurons, layers)")
    p.add_argument("--target", default=None, help="budget: params=0.5 (share of prunable parameters), flops=0.5 "
                                                  "(share of body FLOPs at --seq-len), speedup=1.5 (predicted "
                                                  "from the body's FLOPs: removes 1 - 1/1.5 of them, not a "
                                                  "timing) or heads=0.3,neurons=0.5")
    p.add_argument("--allocation", choices=["global", "uniform"], default="global",
                   help="budget: rank units across layers (global, default) or remove the same count per layer")
    p.add_argument("--scope", choices=["global", "per_layer"], default="global",
                   help="with --strategy --ratio: rank heads across the model (global, default) or within each layer")
    p.add_argument("--min-heads", type=int, default=1, help="active heads every layer keeps (default 1)")
    p.add_argument("--min-neurons", type=int, default=1, help="budget: active neurons every layer keeps (default 1)")
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


def _check_arguments(args: argparse.Namespace) -> str:
    """Which way the plan is given: 'explicit', 'strategy' or 'budget' (bad combinations raise)."""
    explicit = any(v is not None for v in (args.heads, args.neurons, args.layers))
    budget = args.units is not None or args.target is not None
    if args.min_heads < 0 or args.min_neurons < 0:
        raise SentinelError("--min-heads and --min-neurons must be 0 or more.")
    if explicit and (budget or args.strategy is not None):
        raise SentinelError("Give either an explicit plan (--heads/--neurons/--layers) or --strategy/--units, "
                            "not both.")
    if args.ratio is not None and (args.strategy is None or budget):
        raise SentinelError("--ratio goes with --strategy; with --heads the plan itself says what to prune "
                            "(for budgets use --target).")
    if explicit:
        return "explicit"
    if budget:
        if args.target is None:
            raise SentinelError("--units needs --target, e.g. --target params=0.5.")
        return "budget"
    if args.strategy is None:
        raise SentinelError("Say what to prune: --heads/--neurons/--layers, --strategy NAME --ratio R, "
                            "or --units heads,neurons --target params=0.5.")
    if args.ratio is None:
        raise SentinelError(f"--strategy {args.strategy} needs --ratio R (fraction of heads to prune, in [0, 1)), "
                            "or --units and --target for a budget.")
    return "strategy"


def _units(text: str | None) -> list[str]:
    names = [u.strip() for u in (text or "heads").split(",") if u.strip()]
    unknown = [u for u in names if u not in UNIT_NAMES]
    if unknown or not names:
        raise SentinelError(f"Unknown unit kind {', '.join(unknown) or '(none)'}; choose from heads, neurons, layers.")
    return [UNIT_NAMES[u] for u in dict.fromkeys(names)]


def budget_metric(strategy: str | None, kind: str) -> str:
    """The metric a budget uses for `kind`: the strategy's name where that kind has it, else the kind's default."""
    from sentinel.metrics import KIND_METRICS

    if strategy is None or strategy not in KIND_METRICS[kind]:
        if strategy is not None:
            logger.info("%s has no %s metric; using %s for them.", strategy, kind, DEFAULT_BUDGET_METRIC[kind])
        return DEFAULT_BUDGET_METRIC[kind]
    return strategy


def run(args: argparse.Namespace) -> int:
    from sentinel.commands.analyze import score_model
    from sentinel.evaluation.size import parameter_count
    from sentinel.models import load_model, save_model
    from sentinel.pruning import PruningPlan, apply_plan, parse_plan_text
    from sentinel.pruning.budget import Target, select_budget
    from sentinel.pruning.plan import parse_layers_text, plan_to_json
    from sentinel.pruning.strategies import check_min_heads, get_strategy, strategy_class

    out = writable_folder(args.out)
    how = _check_arguments(args)
    extra: dict[str, Any] = {}
    if how == "strategy":
        strategy = get_strategy(args.strategy, pruning_ratio=args.ratio, min_heads=args.min_heads, seed=args.seed,
                                scope=args.scope, whole_kv_groups=args.mode == "remove")
    elif how == "budget":
        kinds = _units(args.units)
        target = Target.parse(args.target)
        if args.strategy is not None:
            strategy_class(args.strategy)                       # unknown names fail before loading
    else:
        requested = PruningPlan(parse_plan_text(args.heads) if args.heads else {},
                                parse_plan_text(args.neurons, "neuron") if args.neurons else {},
                                parse_layers_text(args.layers) if args.layers else {})
    if args.recover != "none" and args.mode != "remove":
        raise SentinelError("--recover re-fits weights after units are removed; use it with --mode remove.")
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    model = loaded.model
    if how == "strategy":
        scores, text = score_model(loaded, args, list(strategy.metrics)) if strategy.metrics else ({}, {})
        plan = PruningPlan(heads=strategy.select_heads_to_prune(model, scores))
        note = {"how": "strategy", **strategy.to_dict(), "mode": args.mode, "heads": plan_to_json(plan.heads), **text}
    elif how == "budget":
        scores, text = {}, {}
        for kind in kinds:
            metric = budget_metric(args.strategy, kind)
            found, info = score_model(loaded, args, [metric], kind=kind)
            scores[kind] = found[metric]
            text.update(info)
        seq_len = args.seq_len or 256
        result = select_budget(model, scores, target, allocation=args.allocation, min_heads=args.min_heads,
                               min_neurons=args.min_neurons, whole_kv_groups=args.mode == "remove", seq_len=seq_len)
        if result.reason:
            logger.warning("Budget: %s.", result.reason)
        plan = result.plan
        budget = result.to_dict()
        del budget["plan"]
        extra["budget"] = budget
        note = {"how": "budget", "target": target.describe(), "allocation": args.allocation,
                "metrics": result.metrics, "mode": args.mode, "plan": plan.to_dict(), **text}
    else:
        check_min_heads(model, requested.heads, args.min_heads)
        plan = requested
        note = {"how": "explicit", "mode": args.mode, "heads": plan_to_json(plan.heads), "plan": plan.to_dict()}
    if plan.is_empty():
        logger.warning("The plan is empty; saving the model unchanged.")
    before = parameter_count(model)
    recovery = None
    if args.mode == "remove":
        done, recovery = _remove(loaded, plan, note, args)
    else:
        done = apply_plan(model, plan, args.mode, note=note)
    save_model(model, loaded.tokenizer, out, note=note)
    after = parameter_count(model)
    result_json = {"pruned": plan_to_json(done.heads), "params_before": before, "params_after": after,
                   "out": str(out), "plan": done.to_dict(), "counts": done.counts(), **extra}
    if recovery is not None:
        result_json["recovery"] = recovery
    if args.json:
        print_json(result_json)
    else:
        counts = ", ".join(f"{n} {k}" for k, n in done.counts().items() if n) or "nothing"
        recovered = "" if recovery is None else (
            f"; recovered ({recovery['method']}, {len(recovery['fits'])} projections, {recovery['tokens']} tokens, "
            f"{recovery['seconds']:.1f}s)")
        verb = "masked" if args.mode == "mask" else "removed"
        print(f"{verb} {counts}; parameters {before:,} -> {after:,}{recovered}; saved to {out}")
        if how == "budget" and target.speedup is not None:
            print(f"speed-up predicted from the body's FLOPs: {result.speedup_predicted:.2f}x (target "
                  f"{target.speedup:g}x); time it with `sentinel benchmark` for the measured one")
    return 0


def _remove(loaded: Any, plan: Any, note: dict, args: argparse.Namespace) -> tuple[Any, dict | None]:
    """Remove the plan's units, then (with --recover) re-fit the output projections; the note records the recovery."""
    from sentinel.pruning import apply_plan
    from sentinel.data import calibration_text_for
    from sentinel.pruning.recovery import CalibrationConfig, prune_and_recover

    method = None if args.recover == "none" else args.recover
    calibration = CalibrationConfig(text=calibration_text_for(args.model, args.calibration_text),
                                    samples=args.calibration_samples,
                                    seq_len=args.seq_len or CalibrationConfig.seq_len)
    done, result = prune_and_recover(loaded.model, loaded.tokenizer, lambda m: apply_plan(m, plan, "remove", note=note),
                                     method, calibration)
    if result is None:
        return done, None
    summary = {**result.to_dict(), "calibration": calibration.to_dict()}
    note["recover"] = {k: summary[k] for k in ("method", "tokens", "ridge", "calibration")}
    return done, summary
