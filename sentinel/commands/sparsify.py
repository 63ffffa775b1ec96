"""`sentinel sparsify`: zero individual weights of the body's matrices (one-shot, gradual or lottery ticket),
optionally fine-tune with the zeros held, and save an ordinary checkpoint (masks made permanent).

Method scores: l1/l2 |w|, random, gradient |dL/dw|, snip |w*dL/dw|, wanda |w|*||x||;
sparsegpt prunes block by block and updates the kept weights to reconstruct each matrix's calibration outputs;
scope layer (each matrix the same sparsity), global (one threshold) or row (each output row); pattern unstructured or N:M along the input dimension.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sentinel.commands.common import add_model_arguments, print_json, writable_folder

METHOD_NAMES = ("l1", "l2", "random", "gradient", "snip", "wanda", "sparsegpt")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sparsify` sub-command."""
    p = subparsers.add_parser("sparsify", help="weight-level sparsity (unstructured or N:M) and save the model",
                              description=__doc__)
    add_model_arguments(p)
    p.add_argument("--method", default="l1", help=f"{'|'.join(METHOD_NAMES)} (default l1)")
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction of weights set to zero, in [0, 1) "
                   "(default 0.5; an N:M pattern fixes it at 1-N/M)")
    p.add_argument("--pattern", default="unstructured", help="unstructured (default) or N:M, e.g. 2:4 or 4:8")
    p.add_argument("--scope", default="layer", help="layer (each matrix the same sparsity, default), global (one "
                   "threshold) or row (each output row alone, as in the Wanda paper)")
    p.add_argument("--schedule", default="oneshot", help="oneshot (default), gradual (Zhu & Gupta cubic) or lottery")
    p.add_argument("--steps", type=int, default=None,
                   help="fine-tuning steps: after one-shot pruning (default none), for the whole gradual run, "
                        "or per lottery round")
    p.add_argument("--every", type=int, default=None, help="gradual: recompute masks every K steps (default steps/10)")
    p.add_argument("--initial-sparsity", type=float, default=0.0, help="gradual: starting sparsity (default 0)")
    p.add_argument("--rounds", type=int, default=2, help="lottery: prune-rewind rounds (default 2)")
    p.add_argument("--rewind-step", type=int, default=0, help="lottery: rewind to this step of round 1 (default 0)")
    p.add_argument("--distill", action="store_true", help="fine-tune by distilling from the dense model")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="fine-tuning sequences per step (default 8)")
    p.add_argument("--block-size", type=int, default=128, help="fine-tuning tokens per sequence (default 128)")
    p.add_argument("--text", default=None, help="fine-tuning text (default: the bundled train split)")
    p.add_argument("--eval-text", default=None, help="evaluation text (default: the bundled validation split)")
    p.add_argument("--eval-tokens", type=int, default=8192, help="evaluation tokens (default 8192)")
    p.add_argument("--dampening", type=float, default=0.01,
                   help="sparsegpt: add this fraction of the Hessian's mean diagonal to its diagonal (default 0.01)")
    p.add_argument("--column-block", type=int, default=128,
                   help="sparsegpt: columns per lazy-update block (default 128; a multiple of M for N:M)")
    p.add_argument("--calibration-text", default=None,
                   help="text for gradient/snip/wanda/sparsegpt (default: the bundled train split)")
    p.add_argument("--calibration-blocks", type=int, default=16, help="calibration blocks (default 16)")
    p.add_argument("--calibration-len", type=int, default=128, help="tokens per calibration block (default 128)")
    p.add_argument("--per-matrix", default=None, help="JSON from `sentinel sensitivity --out`: use its suggested "
                   "per-matrix sparsities (layer scope, unstructured)")
    p.add_argument("--include", action="append", default=[], help="also prune this module (e.g. an untied lm_head)")
    p.add_argument("--seed", type=int, default=0, help="seed for random scores and fine-tuning (default 0)")
    p.add_argument("--compressed", action="store_true",
                   help="also write model.sparse.safetensors (bitmask + non-zero values) next to the checkpoint")
    p.add_argument("--report", action="store_true",
                   help="measure sizes (dense, compressed, int8) and CPU speed against the dense model")
    p.add_argument("--out", required=True, help="folder to save the sparse model in")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> Any:
    """Validate everything that needs no model; returns the SparsityConfig."""
    from sentinel.sparsity import SparsityConfig
    from sentinel.sparsity.schedule import SCHEDULES
    from sentinel.sparsity.targets import SparsityError

    if args.schedule not in SCHEDULES:
        raise SparsityError(f"Unknown schedule {args.schedule!r}; choose {', '.join(SCHEDULES)}.")
    if args.steps is not None and args.steps <= 0:
        raise SparsityError(f"--steps must be at least 1, got {args.steps}.")
    if args.schedule in ("gradual", "lottery") and args.steps is None:
        raise SparsityError(f"--schedule {args.schedule} needs --steps N (training steps).")
    if args.every is not None and args.every <= 0:
        raise SparsityError(f"--every must be at least 1, got {args.every}.")
    if args.rounds <= 0:
        raise SparsityError(f"--rounds must be at least 1, got {args.rounds}.")
    if args.eval_tokens < 2:
        raise SparsityError(f"--eval-tokens must be at least 2, got {args.eval_tokens}.")
    if args.distill and args.steps is None:
        raise SparsityError("--distill needs --steps N (it is a fine-tuning option).")
    per_matrix = {}
    if args.per_matrix:
        try:
            per_matrix = dict(json.loads(Path(args.per_matrix).read_text(encoding="utf-8"))["suggestion"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SparsityError(f"--per-matrix {args.per_matrix}: not a `sentinel sensitivity` JSON with a "
                                f"'suggestion' ({err}).") from None
    config = SparsityConfig(method=args.method, sparsity=args.sparsity, scope=args.scope, pattern=args.pattern,
                            seed=args.seed, include=tuple(args.include), per_matrix=per_matrix,
                            dampening=args.dampening, column_block=args.column_block)
    config.validate()
    if args.schedule != "oneshot":
        if config.pattern not in (None, "unstructured"):
            raise SparsityError(f"--schedule {args.schedule} supports unstructured patterns only.")
        if args.method not in ("l1", "l2", "random"):
            raise SparsityError(f"--schedule {args.schedule} recomputes masks during training with l1, l2 or random; "
                                f"{args.method} needs calibration passes, so use it with --schedule oneshot.")
    return config


def run(args: argparse.Namespace) -> int:
    """Validate, load, prune, (fine-tune), make permanent, save; returns the exit code."""
    config = _check(args)
    out = writable_folder(args.out)
    import copy

    from sentinel.data import calibration_text_for, evaluation_text
    from sentinel.models import load_model, save_model
    from sentinel.sparsity import make_permanent, sparsify, sparsity_stats
    from sentinel.sparsity.schedule import (
        LotteryConfig, finetune_sparse, gradual_over, lottery_ticket, start_gradual,
    )
    from sentinel.sparsity.scores import DATA_METHODS
    from sentinel.sparsity.storage import COMPRESSED_FILE, save_compressed
    from sentinel.models.positions import cap_to_positions
    from sentinel.sparsity.text import calibration_blocks, evaluator
    from sentinel.training.config import FineTuneConfig
    from sentinel.training.finetune import describe_result, load_finetune_data

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    evaluate, text = evaluator(tokenizer, evaluation_text(args.model, args.eval_text).source,   # own split first
                               seq_len=cap_to_positions(model, 256),
                               max_tokens=args.eval_tokens)
    dense_ppl = evaluate(model)
    dense = copy.deepcopy(model) if (args.distill or args.report) else None
    result: dict[str, Any] = {"model": loaded.source, "config": config.to_dict(), "schedule": args.schedule,
                              "evaluation": text, "perplexity_dense": dense_ppl}
    if args.steps is not None:
        ft = FineTuneConfig(max_steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size,
                            block_size=cap_to_positions(model, args.block_size), eval_every=0, eval_max_tokens=args.eval_tokens,
                            distill=args.distill, seed=args.seed, device=args.device)
        ft.validate()
        data = load_finetune_data(tokenizer, args.text, ft.block_size, max_validation_tokens=args.eval_tokens)
    if args.schedule == "oneshot":
        calibration = None
        if config.method in DATA_METHODS:
            calibration = calibration_blocks(tokenizer, calibration_text_for(args.model, args.calibration_text),
                                             args.calibration_blocks,
                                             cap_to_positions(model, args.calibration_len))
        # without fine-tuning, the zeros go straight into the weights (one matrix at a time, no mask copies)
        done = sparsify(model, config, calibration, hold=args.steps is not None)
        result["perplexity_oneshot"] = evaluate(model)
        result["seconds_scoring"] = done.seconds
        if args.steps is not None:
            trained = finetune_sparse(model, tokenizer, data, ft, teacher=dense)
            result["finetune"] = describe_result(trained)
    elif args.schedule == "gradual":
        schedule = gradual_over(args.steps, config.sparsity, config.method, config.scope, config.seed,
                                initial=args.initial_sparsity, every=args.every)
        callback = start_gradual(model, schedule)
        trained = finetune_sparse(model, tokenizer, data, ft, teacher=dense, callback=callback)
        result["finetune"] = describe_result(trained)
        result["gradual"] = {"schedule": asdict(schedule), "history": callback.history}
    else:
        rate = 1 - (1 - config.sparsity) ** (1 / args.rounds)
        lottery = LotteryConfig(rounds=args.rounds, rate=rate, steps=args.steps, rewind_step=args.rewind_step,
                                scope=config.scope, method=config.method)
        result["lottery"] = lottery_ticket(model, tokenizer, data, ft, lottery).to_dict()
    make_permanent(model)
    stats = sparsity_stats(model)
    result["perplexity_final"] = evaluate(model)
    result["sparsity"] = stats.sparsity
    result["nonzero_parameters"] = stats.nonzero_parameters
    result["total_parameters"] = stats.total_parameters
    note = {"how": "sparsify", **{k: v for k, v in result.items() if k not in ("gradual", "lottery")}}
    also_write = (lambda staging: save_compressed(model, staging / COMPRESSED_FILE)) if args.compressed else None
    out = save_model(model, tokenizer, out, note=note, also_write=also_write)
    result["out"] = str(out)
    if args.compressed:
        result["compressed"] = str(out / COMPRESSED_FILE)
    if args.report:
        result["report"] = measure_report(dense, model, tokenizer)
    result["matrices"] = stats.to_dict()["matrices"]
    if args.json:
        print_json(result)
    else:
        line = (f"{config.method} {args.schedule} {config.pattern or 'unstructured'} ({config.scope}): "
                f"{stats.sparsity:.1%} of the body's weights are zero, {stats.nonzero_parameters:,} of "
                f"{stats.total_parameters:,} parameters non-zero\nperplexity dense {dense_ppl:.3f}")
        if "perplexity_oneshot" in result:
            line += f", one-shot {result['perplexity_oneshot']:.3f}"
        line += f", final {result['perplexity_final']:.3f}\nsaved to {out}"
        print(line)
        if args.report:
            print(describe_report(result["report"]))
    return 0


def measure_report(dense: Any, sparse: Any, tokenizer: Any, repeats: int = 5) -> dict[str, Any]:
    """Sizes of the sparse model (dense file, bitmask file, int8 file) and speed vs the dense model, interleaved."""
    import tempfile

    from sentinel.sparsity.quantize import int8_bytes, quantize_int8, save_int8
    from sentinel.evaluation.paired import interleaved_speed
    from sentinel.models.positions import cap_to_positions
    from sentinel.sparsity.storage import size_report

    quantized = quantize_int8(sparse)
    with tempfile.TemporaryDirectory(prefix="sentinel-int8-") as folder:
        size = size_report(sparse, int8_bytes(save_int8(quantized, None, Path(folder) / "int8")))
    positions = cap_to_positions(sparse, 160)       # 128 prompt + 32 new tokens, fewer on a short model
    speed = interleaved_speed({"dense": dense.cpu(), "sparse (dense kernels)": sparse.cpu(), "sparse int8": quantized},
                              tokenizer, repeats=repeats, prompt_tokens=positions - 32, new_tokens=32)
    return {"size": size.to_dict(), "speed": speed.report()}


def describe_report(report: dict[str, Any]) -> str:
    size = report["size"]
    lines = [f"size        {size['nonzero_parameters']:,} non-zero of {size['total_parameters']:,} parameters; "
             f"dense {size['dense_bytes'] / 1e6:.2f} MB, bitmask-compressed {size['compressed_bytes'] / 1e6:.2f} MB, "
             f"int8 {size['int8_bytes'] / 1e6:.2f} MB"]
    for row in report["speed"]["rows"]:
        lines.append(f"speed       {row['name']}: prefill {row['prefill_tokens_per_s']:,.0f} tok/s, decode "
                     f"{row['decode_tokens_per_s']:,.1f} tok/s (medians; vs dense: {row['verdict']})")
    return "\n".join(lines)

