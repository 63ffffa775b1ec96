"""`sentinel export`: write a pruned model as a stock Hugging Face checkpoint that plain transformers loads.

Masked heads are removed first. Shapes must be uniform across blocks and expressible in the family's
config (Llama/Mistral/Qwen2: heads, K/V heads, MLP width, blocks; GPT-2/OPT/BERT/RoBERTa/GPT-NeoX/GPT-J/Phi/
Falcon: MLP width and blocks, not heads); otherwise one line says which blocks differ and what would make it exportable.
`--format onnx` writes ONNX graphs (prefill, and a KV-cache graph for causal models) of any pruned shape.
"""

from __future__ import annotations

import argparse

from sentinel.commands.common import add_model_arguments, print_json, writable_folder

# the names sentinel.exporters.FORMATS knows, listed here so parsing imports no torch
FORMAT_CHOICES = ("hf", "gguf", "onnx", "compressed-tensors")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="write a pruned model that plain transformers loads",
                              description=__doc__)
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="folder to write the export to")
    p.add_argument("--format", default="hf", choices=sorted(FORMAT_CHOICES),
                   help="hf: a stock transformers folder (default); gguf: a folder with model.gguf for llama.cpp "
                        "(Llama family, per-layer shapes allowed); onnx: prefill and KV-cache graphs for ONNX "
                        "Runtime, any per-block shapes; compressed-tensors: a sparse model (sentinel sparsify) "
                        "bitmask-compressed for vLLM / llm-compressor, unstructured or 2:4")
    p.add_argument("--quant", default=None, choices=("f32", "f16", "q8_0"),
                   help="GGUF weight type (gguf format only; default f16; norms stay f32)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the check after writing (hf: reload with plain transformers and compare logits; "
                        "onnx: run ONNX Runtime and compare logits; gguf and compressed-tensors: read the file "
                        "back and compare weights)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sentinel.exporters import export_format
    from sentinel.models import load_model

    if args.quant is not None and args.format != "gguf":
        from sentinel.errors import SentinelError
        raise SentinelError(f"--quant applies to --format gguf only, not {args.format}; drop it.")
    options = {"quant": args.quant} if args.quant is not None else {}
    out = writable_folder(args.out)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    writer = export_format(args.format)
    result = writer.export(loaded.model, loaded.tokenizer, out, note={"exported_from": loaded.source},
                           verify=not args.no_verify, **options)
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
