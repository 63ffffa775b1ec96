"""`sentinel export`: write a pruned model as a stock Hugging Face checkpoint that plain transformers loads.

Masked heads are removed first. Shapes must be uniform across blocks and expressible in the family's
config (Llama/Mistral/Qwen2: heads, K/V heads, MLP width, blocks; GPT-2/OPT/BERT/RoBERTa/GPT-NeoX: MLP
width and blocks, not heads); otherwise one line says which blocks differ and what would make it exportable.
`--format onnx` writes ONNX graphs (prefill, and a KV-cache graph for causal models) of any pruned shape.
"""

from __future__ import annotations

import argparse

from sentinel.commands.common import add_model_arguments, print_json, writable_folder

# the names sentinel.exporters.FORMATS knows, listed here so parsing imports no torch
FORMAT_CHOICES = ("hf", "onnx")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="write a pruned model that plain transformers loads",
                              description=__doc__)
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="folder to write the export to")
    p.add_argument("--format", default="hf", choices=sorted(FORMAT_CHOICES),
                   help="hf: a stock transformers folder (default); onnx: a prefill graph for ONNX Runtime, any per-block shapes")
    p.add_argument("--no-verify", action="store_true",
                   help="skip reloading the export (plain transformers, or ONNX Runtime) and comparing logits")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sentinel.exporters import export_format
    from sentinel.models import load_model

    out = writable_folder(args.out)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    writer = export_format(args.format)
    result = writer.export(loaded.model, loaded.tokenizer, out, note={"exported_from": loaded.source},
                           verify=not args.no_verify)
    if args.json:
        print_json(result.to_dict())
        return 0
    if args.format != "hf":
        print(result.summary())
        return 0
    changes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in result.config_changes.items()) or "none"
    for line in result.notes:
        print(f"note: {line}")
    checked = ("not verified" if result.verified_max_abs_diff is None
               else f"reloaded with plain transformers, max logit difference {result.verified_max_abs_diff:.2g}")
    print(f"exported {result.model_class} ({result.blocks} blocks, {result.heads} heads, MLP width "
          f"{result.mlp_width}) to {result.path}; config changes: {changes}; {checked}")
    return 0
