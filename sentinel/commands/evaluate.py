"""`sentinel evaluate`: perplexity on text plus size and prefill/decode speed of a (pruned) model, and with
--tasks its accuracy on lm-evaluation-harness tasks (a bundled task, a task folder, or a standard task name)."""

from __future__ import annotations

import argparse

from sentinel.commands.common import add_model_arguments, add_task_arguments, print_json, task_selection
from sentinel.errors import DataError, UnsupportedModelError

MAX_DEFAULT_SEQ_LEN = 1024
MIN_REPORTED_SPARSITY = 0.01     # below 1% exact zeros a model is reported as dense


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command."""
    p = subparsers.add_parser("evaluate", help="perplexity, parameters and tokens/s of a model",
                              description=__doc__)
    add_model_arguments(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--text", help="local .txt, .jsonl or .csv file (default: a model folder's own corpus/validation.jsonl, else the bundled validation split)")
    source.add_argument("--dataset", help="hub dataset name:config:split, e.g. wikitext:wikitext-2-raw-v1:test")
    p.add_argument("--text-column", default="text", help="column holding the text in .jsonl/.csv/datasets")
    p.add_argument("--seq-len", type=int, default=None, help="window length (default: the model's positions, "
                   f"at most {MAX_DEFAULT_SEQ_LEN})")
    p.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: seq-len, no overlap)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="evaluate only the first N tokens of the text")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length for the speed test")
    p.add_argument("--new-tokens", type=int, default=32, help="generated tokens for the decode speed test")
    p.add_argument("--runs", type=int, default=5, help="timed speed runs (median reported)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    add_task_arguments(p, "run on the model as it is in memory (--batch-size is used for them too)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and text, measure, print; returns the exit code."""
    import torch

    from sentinel.data import blocks_from_texts, describe_source, evaluation_text, load_texts
    from sentinel.evaluation.perplexity import perplexity
    from sentinel.evaluation.speed import measure_speed
    from sentinel.models import load_model

    if args.max_tokens is not None and args.max_tokens < 2:
        raise DataError(f"--max-tokens must be at least 2, got {args.max_tokens}.")
    for flag, value, least in (("--seq-len", args.seq_len, 2), ("--stride", args.stride, 1),
                               ("--batch-size", args.batch_size, 1), ("--runs", args.runs, 1),
                               ("--prompt-tokens", args.prompt_tokens, 1), ("--new-tokens", args.new_tokens, 1)):
        if value is not None and value < least:   # checked here: 0 must not silently become the default
            raise DataError(f"{flag} must be at least {least}, got {value}.")
    if args.stride is not None and args.seq_len is not None and args.stride > args.seq_len:
        raise DataError(f"--stride {args.stride} is longer than the window (--seq-len {args.seq_len}); "
                        "use a stride of at most the window.")
    selection = task_selection(args)   # resolved before the model loads: a missing lm-eval or task fails fast
    if args.threads is not None:
        if args.threads < 1:
            raise DataError(f"--threads must be at least 1, got {args.threads}.")
        torch.set_num_threads(args.threads)
    source = args.dataset or args.text
    chosen = evaluation_text(args.model, source)   # a model folder's own validation split unless text was chosen
    source = chosen.source
    texts = load_texts(source, text_column=args.text_column)  # fail fast on bad text, before loading the model
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    if not loaded.layout.is_causal:
        raise UnsupportedModelError(f"{loaded.source} is not a causal language model; perplexity and decode speed "
                                    "are defined for causal LMs only.")
    positions = getattr(loaded.model.config, "max_position_embeddings", None) or MAX_DEFAULT_SEQ_LEN
    seq_len = args.seq_len if args.seq_len is not None else min(positions, MAX_DEFAULT_SEQ_LEN)
    if chosen.own and args.stride is None:   # the one function `sentinel report` and the dashboard share
        from sentinel.evaluation.own_text import text_perplexity

        ppl = text_perplexity(loaded.model, loaded.tokenizer, chosen, args.max_tokens, seq_len, args.batch_size)
        text_name = chosen.name
    else:
        blocks = blocks_from_texts(loaded.tokenizer, texts, seq_len, describe_source(source), args.max_tokens)
        data = blocks.stream() if args.stride else blocks.input_ids
        ppl = perplexity(loaded.model, loaded.tokenizer, data, seq_len=seq_len, stride=args.stride,
                         batch_size=args.batch_size)
        text_name = blocks.source
    prompt_tokens = max(1, min(args.prompt_tokens, positions - args.new_tokens))
    speed = measure_speed(loaded.model, loaded.tokenizer, prompt_tokens=prompt_tokens, new_tokens=args.new_tokens,
                          runs=args.runs)
    result = {
        "model": loaded.source,
        "text": text_name,
        "perplexity": ppl.perplexity,
        "nll": ppl.nll,
        "tokens_evaluated": ppl.tokens_evaluated,
        "window_length": ppl.window_length,
        "stride": ppl.stride,
        "parameters": speed.params,
        "weight_bytes": speed.weight_bytes,
        "prefill_tokens_per_s": speed.prefill_tokens_per_s,
        "decode_tokens_per_s": speed.decode_tokens_per_s,
        "speed_prompt_tokens": speed.prompt_tokens,
        "speed_new_tokens": speed.new_tokens,
        "device": speed.device,
        "threads": torch.get_num_threads(),
    }
    from sentinel.sparsity import sparsity_stats

    sparse = sparsity_stats(loaded.model)
    if sparse.sparsity >= MIN_REPORTED_SPARSITY:     # weight-level sparsity (sentinel sparsify) is reported when present
        result["sparsity"] = sparse.sparsity
        result["nonzero_parameters"] = sparse.nonzero_parameters
    tasks = []
    if selection is not None:
        from sentinel.evaluation.tasks import evaluate_tasks

        tasks = evaluate_tasks(loaded.model, loaded.tokenizer, selection, limit=args.task_limit,
                               batch_size=args.batch_size)
        result["tasks"] = [t.to_dict() for t in tasks]
    if args.json:
        print_json(result)
    else:
        print(f"model       {result['model']}\ntext        {result['text']}\n"
              f"perplexity  {ppl.perplexity:.3f} over {ppl.tokens_evaluated:,} tokens "
              f"(window {ppl.window_length}, stride {ppl.stride})\n"
              f"parameters  {speed.params:,} ({speed.weight_bytes / 1e6:.1f} MB)\n"
              f"speed       prefill {speed.prefill_tokens_per_s:,.0f} tok/s, decode {speed.decode_tokens_per_s:,.1f} "
              f"tok/s on {speed.device}")
        if "sparsity" in result:
            print(f"sparsity    {result['sparsity']:.1%} of the body's weights are zero "
                  f"({result['nonzero_parameters']:,} non-zero parameters; dense kernels, so no speed-up from it)")
        for t in tasks:
            print(f"task        {t.task}: {t.text()}")
    return 0
