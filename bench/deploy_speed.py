"""Dense vs pruned speed where a pruned model is served: ONNX Runtime and llama.cpp, side by side in one run.

A random-initialised Llama-shaped model (quality does not matter for speed) is pruned by 50% of the query
heads (one of each K/V pair) and 50% of the MLP neurons in every block, exported with
`sentinel export`'s writers (ONNX, GGUF f16), and both versions are timed interleaved, 1 and 2 threads:
prefill (a 128-token prompt) and, in llama.cpp, decode (time per token over 32 steps). Prints medians,
ranges and the dense / pruned ratio beside the FLOP prediction.

    python bench/deploy_speed.py [--rounds 9] [--layers 6] [--hidden 512]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers


def build(layers: int, hidden: int) -> tuple[torch.nn.Module, object]:
    tokenizer = transformers.AutoTokenizer.from_pretrained("assets/models/stdlib-gpt2")
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_attention_heads=8,
                                      num_key_value_heads=4, intermediate_size=3 * hidden, num_hidden_layers=layers,
                                      max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval(), tokenizer


def spread(times: list[float]) -> str:
    return f"{statistics.median(times) * 1e3:8.1f} ms ({min(times) * 1e3:.1f}–{max(times) * 1e3:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--decode", type=int, default=32)
    args = parser.parse_args()

    import llama_cpp
    import onnxruntime as ort

    from sentinel import remove_heads
    from sentinel.exporters import export_format
    from sentinel.models.flops import forward_flops
    from sentinel.pruning.units import remove_neurons

    dense, tokenizer = build(args.layers, args.hidden)
    pruned, _ = build(args.layers, args.hidden)
    remove_heads(pruned, {layer: [1, 3, 5, 7] for layer in range(args.layers)})
    remove_neurons(pruned, {layer: list(range(0, 3 * args.hidden, 2)) for layer in range(args.layers)})
    flops = {name: forward_flops(m, args.prompt, lm_head=True) for name, m in (("dense", dense), ("pruned", pruned))}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("dense", dense), ("pruned", pruned))}
    out = Path(tempfile.mkdtemp(prefix="deploy-speed-"))
    files = {}
    for name, model in (("dense", dense), ("pruned", pruned)):
        files[name, "onnx"] = Path(export_format("onnx").export(model, tokenizer, out / f"{name}-onnx").path)
        files[name, "gguf"] = Path(export_format("gguf").export(model, tokenizer, out / f"{name}-gguf",
                                                                quant="f16").file)

    ids = np.random.default_rng(0).integers(10, len(tokenizer) - 1, (1, args.prompt))
    print(f"Llama-shaped, {args.layers} blocks, hidden {args.hidden}; parameters dense {params['dense']:,}, "
          f"pruned {params['pruned']:,}; prefill FLOPs ratio dense/pruned "
          f"{flops['dense'] / flops['pruned']:.2f}x (predicted)")
    print(f"{'runtime':<10} {'threads':>7} {'measure':<8} {'dense':>28} {'pruned':>28} {'ratio':>6}")
    for threads in (1, 2):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        sessions = {name: ort.InferenceSession(str(files[name, "onnx"] / "model.onnx"), opts,
                                               providers=["CPUExecutionProvider"]) for name in ("dense", "pruned")}
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        llms = {name: llama_cpp.Llama(model_path=str(files[name, "gguf"]), n_ctx=args.prompt + args.decode + 8,
                                      n_threads=threads, n_batch=args.prompt, verbose=False)
                for name in ("dense", "pruned")}
        times = {(name, what): [] for name in ("dense", "pruned") for what in ("ort", "cpp-pre", "cpp-dec")}
        for round_ in range(args.rounds + 1):          # round 0 warms up and is not kept
            for name in ("dense", "pruned"):
                start = time.perf_counter()
                sessions[name].run(None, feed)
                ort_time = time.perf_counter() - start
                llm = llms[name]
                llm.reset()
                start = time.perf_counter()
                llm.eval(ids[0].tolist())
                prefill = time.perf_counter() - start
                start = time.perf_counter()
                for step in range(args.decode):    # the token fed does not change the cost of a step
                    llm.eval([int(ids[0, step % args.prompt])])
                decode = (time.perf_counter() - start) / args.decode
                if round_:
                    times[name, "ort"].append(ort_time)
                    times[name, "cpp-pre"].append(prefill)
                    times[name, "cpp-dec"].append(decode)
        for what, runtime, label in (("ort", "onnxrt", "prefill"), ("cpp-pre", "llama.cpp", "prefill"),
                                     ("cpp-dec", "llama.cpp", "decode/t")):
            d, p = times["dense", what], times["pruned", what]
            print(f"{runtime:<10} {threads:>7} {label:<8} {spread(d):>28} {spread(p):>28} "
                  f"{statistics.median(d) / statistics.median(p):5.2f}x")


if __name__ == "__main__":
    main()
