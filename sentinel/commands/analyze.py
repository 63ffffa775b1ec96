"""`sentinel analyze`: importance scores of heads, MLP neurons and layers as a table, JSON or CSV.

Pruned units have no score: "--" in the table, null in JSON, empty in CSV with pruned=True.
`--units heads,neurons,layers` picks the kinds (default heads); each kind gets the metrics of
--metrics it has, or its defaults.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from sentinel.commands.common import add_model_arguments, print_json
from sentinel.defaults import ANALYSIS_SAMPLES, ANALYSIS_SEQ_LEN
from sentinel.errors import DataError, SentinelError

logger = logging.getLogger(__name__)

DEFAULT_METRICS = "entropy,magnitude,gradient"
KIND_DEFAULTS = {"head": DEFAULT_METRICS, "neuron": "magnitude,activation,gradient", "layer": "block_influence,gradient"}
UNIT_NAMES = {"heads": "head", "neurons": "neuron", "layers": "layer"}
LOSS_NAMES = frozenset({"gradient", "loss_impact"})     # metrics that need labels on masked-LM models
DEFAULT_SEQ_LEN = ANALYSIS_SEQ_LEN


def add_text_arguments(parser: argparse.ArgumentParser) -> None:
    """--text/--samples/--seq-len/--batch-size: the text the data-driven metrics run on."""
    parser.add_argument("--text", default=None,
                        help="text to analyse: a .txt/.jsonl/.csv file, bundled:<split>, or a hub dataset "
                             "name:config:split (default: the bundled validation split)")
    parser.add_argument("--samples", type=int, default=ANALYSIS_SAMPLES,
                        help=f"number of token sequences (default {ANALYSIS_SAMPLES})")
    parser.add_argument("--seq-len", type=int, default=None,
                        help=f"tokens per sequence (default {DEFAULT_SEQ_LEN}, or the model's maximum if smaller)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")


def load_analysis_batches(loaded: Any, args: argparse.Namespace,
                          metrics: list[str]) -> tuple[list, list, dict[str, Any]]:
    """(batches for forward metrics, batches for loss metrics, what text was used) from --text.

    Masked-LM models get seeded masked copies for the loss metrics.
    """
    from sentinel.data import load_text_blocks
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
    if loaded.layout.is_causal or not any(m in LOSS_NAMES for m in metrics):
        return batches, batches, info
    return batches, masked_lm_batches(batches, loaded.tokenizer.mask_token_id, seed=args.seed), info


def score_model(loaded: Any, args: argparse.Namespace, metrics: list[str],
                kind: str = "head") -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `metrics` on the loaded model's units of `kind`, reading text only when one needs it; also says what text."""
    from sentinel.metrics import compute_scores, needs_data
    from sentinel.models.state import model_state

    state = model_state(loaded.model)
    if kind == "head" and not any(state.present(layer) for layer in range(state.num_layers)):
        raise DataError(f"Every head of {loaded.source} has been removed, so there is nothing to score; analyse "
                        "the model before removing heads (heads that are only masked are reported as null).")
    data = loss_data = None
    info: dict[str, Any] = {}
    if needs_data(metrics):
        data, loss_data, info = load_analysis_batches(loaded, args, metrics)
    progress = _progress_bar if sys.stderr.isatty() else None
    scores = compute_scores(loaded.model, metrics, data, loss_data=loss_data, seed=args.seed,
                            normalize_layers=getattr(args, "normalize_layers", False), progress=progress, kind=kind)
    return scores, info


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("analyze", help="importance scores of heads, neurons and layers", description=__doc__)
    add_model_arguments(p)
    add_text_arguments(p)
    p.add_argument("--units", default="heads", help="unit kinds: heads, neurons, layers, comma-separated (default heads)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated. heads: entropy, magnitude, gradient, loss_impact, random, hybrid "
                        f"(default {DEFAULT_METRICS}; entropy also reports entropy_normalized); neurons: magnitude, "
                        f"activation, wanda, gradient, random (default {KIND_DEFAULTS['neuron']}); layers: "
                        f"block_influence, gradient, loss_impact, random (default {KIND_DEFAULTS['layer']})")
    p.add_argument("--normalize-layers", action="store_true", help="L2-normalise gradient importance per layer")
    p.add_argument("--seed", type=int, default=0, help="seed for random scores and masked-LM masking (default 0)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the scores as JSON")
    out.add_argument("--out", default=None, help="write one CSV row per (layer, head) to this file")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace the file if it exists")
    p.set_defaults(func=run)


def _kind_metrics(args: argparse.Namespace) -> dict[str, list[str]]:
    """{kind: metrics} for --units and --metrics (each kind takes the metrics it has; none at all is an error)."""
    from sentinel.metrics import KIND_METRICS, check_metric_names

    names = [u.strip() for u in args.units.split(",") if u.strip()]
    unknown = [u for u in names if u not in UNIT_NAMES]
    if unknown or not names:
        raise SentinelError(f"Unknown unit kind {', '.join(unknown) or '(none)'}; choose from heads, neurons, layers.")
    kinds = [UNIT_NAMES[u] for u in dict.fromkeys(names)]
    if args.metrics is None:
        return {kind: KIND_DEFAULTS[kind].split(",") for kind in kinds}
    if kinds == ["head"]:
        return {"head": check_metric_names(args.metrics.split(","))}
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()]
    every = {m for kind in kinds for m in KIND_METRICS[kind]}
    if [m for m in wanted if m not in every] or not wanted:
        check_metric_names(wanted, kinds[0])                     # raises, naming the valid metrics
    result = {kind: [m for m in wanted if m in KIND_METRICS[kind]] for kind in kinds}
    for kind, metrics in result.items():
        if not metrics:
            raise SentinelError(f"None of {', '.join(wanted)} applies to {kind}s; their metrics are "
                                f"{', '.join(KIND_METRICS[kind])}.")
    return result


def run(args: argparse.Namespace) -> int:
    from sentinel.files import check_new_file, write_file_atomically
    from sentinel.models import load_model

    per_kind = _kind_metrics(args)
    csv_path = check_new_file(args.out, overwrite=args.overwrite) if args.out else None
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    all_scores = {kind: score_model(loaded, args, metrics, kind)[0] for kind, metrics in per_kind.items()}
    shown = {kind: _shown(metrics, all_scores[kind]) for kind, metrics in per_kind.items()}
    if args.json:
        result: dict[str, Any] = {"layers": loaded.layout.num_layers, "heads": loaded.layout.num_heads}
        if "head" in all_scores:
            result.update({name: all_scores["head"][name].matrix() for name in shown["head"]})
        others = {kind: {name: all_scores[kind][name].matrix() for name in shown[kind]}
                  for kind in per_kind if kind != "head"}
        if others:
            result["units"] = others
        print_json(result)
    elif csv_path is not None:
        frame = (scores_frame([all_scores["head"][n] for n in shown["head"]]) if list(per_kind) == ["head"]
                 else _units_frame(all_scores, shown))
        write_file_atomically(csv_path, frame.to_csv(index=False))
        names = ", ".join(dict.fromkeys(n for ns in shown.values() for n in ns))
        print(f"wrote {len(frame)} rows ({names}) to {csv_path}")
    else:
        for kind in per_kind:
            for name in shown[kind]:
                print(format_grid(all_scores[kind][name]) if kind != "neuron" else format_summary(all_scores[kind][name]))
    return 0


def _shown(metrics: list[str], scores: dict[str, Any]) -> list[str]:
    """Requested metrics in order, entropy_normalized right after entropy."""
    shown: list[str] = []
    for name in metrics:
        shown.append(name)
        if name == "entropy":
            shown.append("entropy_normalized")
    return [name for name in dict.fromkeys(shown) if name in scores]


def scores_frame(all_scores: list[Any]) -> Any:
    """One row per original (layer, head): layer, head, pruned, then one column per metric."""
    frame = all_scores[0].to_frame()
    for scores in all_scores[1:]:
        frame[scores.metric] = scores.to_frame()[scores.metric]
    return frame


def _units_frame(all_scores: dict[str, dict[str, Any]], shown: dict[str, list[str]]) -> Any:
    """One row per (kind, layer, unit): kind, layer, unit, pruned, then one column per metric."""
    import pandas as pd

    frames = []
    for kind, names in shown.items():
        frame = scores_frame([all_scores[kind][n] for n in names])
        frame = frame.rename(columns={"head": "unit", "neuron": "unit", "part": "unit"})
        frame.insert(0, "kind", kind)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def format_summary(scores: Any) -> str:
    """Per layer: how many units are scored and the min / mean / max of one metric (for wide kinds like neurons)."""
    lines = [f"{scores.kind} {scores.metric}:", f"{'layer':>5} {'scored':>7} {'min':>10} {'mean':>10} {'max':>10}"]
    for layer, row in enumerate(scores.values):
        live = row[~row.isnan()]
        if len(live) == 0:
            lines.append(f"{layer:>5} {0:>7} {'--':>10} {'--':>10} {'--':>10}")
        else:
            lines.append(f"{layer:>5} {len(live):>7} {float(live.min()):>10.4g} {float(live.mean()):>10.4g} "
                         f"{float(live.max()):>10.4g}")
    return "\n".join(lines) + "\n"


def format_grid(scores: Any) -> str:
    """A layer x unit text table of one metric, '--' for pruned units."""
    width = 10
    names = ["block", "attention", "mlp"] if scores.kind == "layer" else [f"h{h}" for h in range(scores.num_heads)]
    lines = [f"{scores.metric}:" if scores.kind == "head" else f"{scores.kind} {scores.metric}:",
             "layer" + "".join(f" {name:>{width}}" for name in names)]
    for layer, row in enumerate(scores.matrix()):
        cells = "".join(f" {'--' if v is None else f'{v:.4g}':>{width}}" for v in row)
        lines.append(f"{layer:>5}{cells}")
    return "\n".join(lines) + "\n"


def _progress_bar(done: int, total: int) -> None:
    sys.stderr.write(f"\rloss impact: {done}/{total} heads")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()
