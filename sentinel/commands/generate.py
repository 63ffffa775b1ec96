"""`sentinel generate`: continue a prompt with a (pruned) model, greedy or seeded sampling."""

from __future__ import annotations

import argparse

from sentinel.commands.common import add_model_arguments, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `generate` sub-command."""
    p = subparsers.add_parser("generate", help="generate text from a prompt", description=__doc__)
    add_model_arguments(p)
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens; 0 = all")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0 = off)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, generate, print; returns the exit code."""
    from sentinel.generation import generate_text
    from sentinel.models import load_model

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    result = generate_text(loaded.model, loaded.tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                           greedy=args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                           seed=args.seed)
    if args.json:
        print_json({"model": loaded.source, **result.to_dict()})
    else:
        print(result.prompt + result.text)
    return 0
