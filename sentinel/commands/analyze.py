"""`sentinel analyze`: per-head importance scores (entropy, magnitude, gradient, ...) as a table, JSON or CSV.

Pruned heads have no score: "--" in the table, null in JSON, empty in CSV with pruned=True.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from sentinel.commands.common import add_model_arguments, print_json
from sentinel.errors import DataError

if TYPE_CHECKING:   # heavy modules are imported inside the functions, so `sentinel --help` stays fast
    import pandas as pd

    from sentinel.metrics import HeadScores
    from sentinel.metrics.batches import Batch
    from sentinel.models import LoadedModel

logger = logging.getLogger(__name__)

DEFAULT_METRICS = "entropy,magnitude,gradient"
DEFAULT_SEQ_LEN = 128


def add_text_arguments(parser: argparse.ArgumentParser) -> None:
    """--text/--samples/--seq-len/--batch-size: the text the data-driven metrics run on."""
    parser.add_argument("--text", default=None,
                        help="text to analyse: a .txt/.jsonl/.csv file, bundled:<split>, or a hub dataset "
                             "name:config:split (default: the bundled validation split)")
    parser.add_argument("--samples", type=int, default=32, help="number of token sequences (default 32)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help=f"tokens per sequence (default {DEFAULT_SEQ_LEN}, or the model's maximum if smaller)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")


def load_analysis_batches(loaded: LoadedModel, args: argparse.Namespace,
                          metrics: list[str]) -> tuple[list[Batch], list[Batch], dict[str, Any]]:
    """(batches for forward metrics, batches for loss metrics, what text was used) from --text.

    Masked-LM models get seeded masked copies for the loss metrics.
    """
    from sentinel.data import load_text_blocks
    from sentinel.metrics import LOSS_METRICS
    from sentinel.metrics.batches import masked_lm_batches, prepare_batches

    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    seq_len = args.seq_len if args.seq_len is not None else min(DEFAULT_SEQ_LEN, limit or DEFAULT_SEQ_LEN)
    for flag, value in (("--samples", args.samples), ("--seq-len", seq_len), ("--batch-size", args.batch_size)):
        if value < 1:
            raise DataError(f"{flag} must be at least 1, got {value}.")
    if limit is not None and seq_len > limit:
        raise DataError(f"--seq-len {seq_len} is longer than the model's {limit} positions; use {limit} or less.")
    blocks = load_text_blocks(loaded.tokenizer, args.text, block_size=seq_len, max_tokens=args.samples * seq_len)
    batches = prepare_batches(blocks.dataloader(batch_size=args.batch_size), device=loaded.device)
    info = {"text": blocks.source, "sequences": len(blocks.input_ids), "tokens": blocks.num_tokens, "seq_len": seq_len}
    logger.info("Analysing %d sequences (%d tokens) of %s", info["sequences"], info["tokens"], info["text"])
    if loaded.layout.is_causal or not any(m in LOSS_METRICS for m in metrics):
        return batches, batches, info
    return batches, masked_lm_batches(batches, loaded.tokenizer.mask_token_id, seed=args.seed), info


def score_model(loaded: LoadedModel, args: argparse.Namespace,
                metrics: list[str]) -> tuple[dict[str, HeadScores], dict[str, Any]]:
    """Run `metrics` on the loaded model, reading text only when one of them needs it; also says what text."""
    from sentinel.metrics import compute_scores, needs_data
    from sentinel.models.heads import model_heads

    heads = model_heads(loaded.model)
    if not any(heads.present(layer) for layer in range(heads.num_layers)):
        raise DataError(f"Every head of {loaded.source} has been removed, so there is nothing to score; analyse "
                        "the model before removing heads (heads that are only masked are reported as null).")
    data = loss_data = None
    info: dict[str, Any] = {}
    if needs_data(metrics):
        data, loss_data, info = load_analysis_batches(loaded, args, metrics)
    progress = _progress_bar if sys.stderr.isatty() else None
    scores = compute_scores(loaded.model, metrics, data, loss_data=loss_data, seed=args.seed,
                            normalize_layers=getattr(args, "normalize_layers", False), progress=progress)
    return scores, info


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("analyze", help="per-head importance scores", description=__doc__)
    add_model_arguments(p)
    add_text_arguments(p)
    p.add_argument("--metrics", default=DEFAULT_METRICS,
                   help=f"comma-separated: entropy, magnitude, gradient, loss_impact, random, hybrid "
                        f"(default {DEFAULT_METRICS}); entropy also reports entropy_normalized")
    p.add_argument("--normalize-layers", action="store_true", help="L2-normalise gradient importance per layer")
    p.add_argument("--seed", type=int, default=0, help="seed for random scores and masked-LM masking (default 0)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the scores as JSON")
    out.add_argument("--out", default=None, help="write one CSV row per (layer, head) to this file")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace the file if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sentinel.files import check_new_file, write_file_atomically
    from sentinel.metrics import check_metric_names
    from sentinel.models import load_model

    metrics = check_metric_names(args.metrics.split(","))
    csv_path = check_new_file(args.out, overwrite=args.overwrite) if args.out else None
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    scores, _ = score_model(loaded, args, metrics)
    shown = _shown(metrics, scores)
    if args.json:
        result: dict[str, Any] = {"layers": loaded.layout.num_layers, "heads": loaded.layout.num_heads}
        result.update({name: scores[name].matrix() for name in shown})
        print_json(result)
    elif csv_path is not None:
        frame = scores_frame([scores[name] for name in shown])
        write_file_atomically(csv_path, frame.to_csv(index=False))
        print(f"wrote {len(frame)} rows ({', '.join(shown)}) to {csv_path}")
    else:
        for name in shown:
            print(format_grid(scores[name]))
    return 0


def _shown(metrics: list[str], scores: dict[str, HeadScores]) -> list[str]:
    """Requested metrics in order, entropy_normalized right after entropy."""
    shown: list[str] = []
    for name in metrics:
        shown.append(name)
        if name == "entropy":
            shown.append("entropy_normalized")
    return [name for name in dict.fromkeys(shown) if name in scores]


def scores_frame(all_scores: list[HeadScores]) -> pd.DataFrame:
    """One row per original (layer, head): layer, head, pruned, then one column per metric."""
    frame = all_scores[0].to_frame()
    for scores in all_scores[1:]:
        frame[scores.metric] = scores.to_frame()[scores.metric]
    return frame


def format_grid(scores: HeadScores) -> str:
    """A layer x head text table of one metric, '--' for pruned heads."""
    width = 10
    lines = [f"{scores.metric}:", "layer" + "".join(f" {'h' + str(h):>{width}}" for h in range(scores.num_heads))]
    for layer, row in enumerate(scores.matrix()):
        cells = "".join(f" {'--' if v is None else f'{v:.4g}':>{width}}" for v in row)
        lines.append(f"{layer:>5}{cells}")
    return "\n".join(lines) + "\n"


def _progress_bar(done: int, total: int) -> None:
    sys.stderr.write(f"\rloss impact: {done}/{total} heads")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()
