"""`sentinel quantize`: int8 dynamic quantization (torch.ao, CPU) of a (sparse) model's body matrices; compares
perplexity, size and interleaved CPU speed with the fp32 model and saves int8 weights + scales as safetensors.
"""

from __future__ import annotations

import argparse

from sentinel.commands.common import add_model_arguments, print_json, writable_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `quantize` sub-command."""
    p = subparsers.add_parser("quantize", help="int8 weights for CPU inference (after sparsify, or alone)",
                              description=__doc__)
    add_model_arguments(p)
    p.add_argument("--text", default=None, help="evaluation text (default: the bundled validation split)")
    p.add_argument("--eval-tokens", type=int, default=8192, help="evaluation tokens (default 8192)")
    p.add_argument("--runs", type=int, default=5, help="interleaved speed repeats (default 5)")
    p.add_argument("--out", required=True, help="folder for the int8 model")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize, evaluate both, save; returns the exit code."""
    from sentinel.sparsity.targets import SparsityError

    if args.eval_tokens < 2:
        raise SparsityError(f"--eval-tokens must be at least 2, got {args.eval_tokens}.")
    if args.runs < 1:
        raise SparsityError(f"--runs must be at least 1, got {args.runs}.")
    if args.device not in ("auto", "cpu"):
        raise SparsityError("int8 dynamic quantization runs on the CPU; use --device cpu (or leave it out).")
    out = writable_folder(args.out)
    from sentinel.evaluation.paired import interleaved_speed
    from sentinel.models import load_model
    from sentinel.sparsity import sparsity_stats
    from sentinel.sparsity.quantize import int8_bytes, quantize_int8, save_int8
    from sentinel.sparsity.storage import size_report
    from sentinel.models.positions import cap_to_positions
    from sentinel.sparsity.text import evaluator

    loaded = load_model(args.model, device="cpu", dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    evaluate, text = evaluator(tokenizer, args.text, seq_len=cap_to_positions(model, 256), max_tokens=args.eval_tokens)
    quantized = quantize_int8(model)
    folder = save_int8(quantized, tokenizer, out)
    size = size_report(model, int8_bytes(folder))
    speed = interleaved_speed({"fp32": model, "int8": quantized}, tokenizer, repeats=args.runs,
                              prompt_tokens=cap_to_positions(model, 160) - 32, new_tokens=32)
    result = {"model": loaded.source, "out": str(folder), "evaluation": text,
              "perplexity_fp32": evaluate(model), "perplexity_int8": evaluate(quantized),
              "sparsity": sparsity_stats(model).sparsity, "size": size.to_dict(), "speed": speed.report(),
              "stored_as": "int8 weights + per-channel float scales and zero points in model.int8.safetensors, "
                           "rebuilt into torch.ao dynamic quantized Linear modules on load (no pickle)"}
    if args.json:
        print_json(result)
        return 0
    print(f"model       {loaded.source} (body sparsity {result['sparsity']:.1%})\n"
          f"perplexity  fp32 {result['perplexity_fp32']:.3f}, int8 {result['perplexity_int8']:.3f}\n"
          f"size        fp32 {size.dense_bytes / 1e6:.2f} MB, int8 {size.int8_bytes / 1e6:.2f} MB\n"
          f"speed       int8 vs fp32: {speed.verdict('int8')}; {speed.threads} CPU threads\n"
          f"saved to    {folder}")
    return 0
