"""Does physical head removal deliver the speedup its FLOP count predicts, and what do masks cost?

GPT-2-small shape (12 layers x 12 heads x 768), random init, CPU, fp32, batch 4 x 256 tokens.
Times the transformer body (model.transformer: embeddings, blocks, final norm; not the LM head)
for the unpruned, the 50%-masked and the 50%-removed model, interleaved round-robin so machine
noise hits all three alike (the order rotates each round); reports medians. Run: python bench/structural_speedup.py [--runs N]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from sentinel import mask_heads, remove_heads
from sentinel.evaluation.size import parameter_count


def body_flops(layers: int, hidden: int, heads_kept: int, head_dim: int, batch: int, seq: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of the transformer body's matrix products."""
    tokens = batch * seq
    width = heads_kept * head_dim
    qkv = 2 * tokens * hidden * 3 * width
    scores = 2 * batch * heads_kept * seq * seq * head_dim   # Q K^T
    mix = 2 * batch * heads_kept * seq * seq * head_dim      # P V
    out = 2 * tokens * width * hidden
    mlp = 2 * tokens * hidden * 4 * hidden * 2
    return layers * (qkv + scores + mix + out + mlp)


def predicted_removed_params(layers: int, hidden: int, removed_per_layer: int, head_dim: int) -> int:
    """Each removed head takes its Q, K, V rows (+ biases) and its O columns."""
    per_head = 3 * (head_dim * hidden + head_dim) + hidden * head_dim
    return layers * removed_per_layer * per_head


def time_once(model: torch.nn.Module, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model.transformer(ids)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    layers, heads, hidden = 12, 12, 768
    head_dim = hidden // heads
    torch.manual_seed(0)
    config = GPT2Config(n_layer=layers, n_head=heads, n_embd=hidden, n_positions=1024)
    config._attn_implementation = "sdpa"
    full = GPT2LMHeadModel(config).eval()
    plan = {layer: list(range(0, heads, 2)) for layer in range(layers)}  # every other head: 50% per layer
    masked = copy.deepcopy(full)
    mask_heads(masked, plan)
    removed = copy.deepcopy(full)
    remove_heads(removed, plan)

    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    models = {"unpruned": full, "masked": masked, "removed": removed}
    for model in models.values():  # warm-up
        time_once(model, ids)
        time_once(model, ids)
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for run in range(args.runs):
        for name in names[run % 3:] + names[:run % 3]:  # rotate the order so no variant always goes first
            times[name].append(time_once(models[name], ids))
    med = {name: statistics.median(t) for name, t in times.items()}

    measured = med["unpruned"] / med["removed"]
    predicted = body_flops(layers, hidden, heads, head_dim, args.batch, args.seq) / body_flops(
        layers, hidden, heads // 2, head_dim, args.batch, args.seq
    )
    overhead = med["masked"] / med["unpruned"] - 1
    params_full, params_removed = parameter_count(full), parameter_count(removed)
    expected_drop = predicted_removed_params(layers, hidden, heads // 2, head_dim)

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"shape: {layers}x{heads}x{hidden}, batch {args.batch} x {args.seq} tokens, fp32, {args.runs} runs (median)")
    for name in models:
        print(f"  {name:9s} body {med[name] * 1000:8.1f} ms")
    print(f"measured speedup (unpruned/removed):   {measured:.3f}x")
    print(f"predicted speedup (FLOPs):             {predicted:.3f}x")
    print(f"measured / predicted:                  {measured / predicted:.3f}   (target >= 0.95)")
    print(f"mask overhead vs unpruned:             {overhead * 100:+.2f}%  (target <= 3%)")
    print(f"parameters: unpruned {params_full:,}  removed {params_removed:,}  "
          f"drop {params_full - params_removed:,}  predicted drop {expected_drop:,}  "
          f"exact: {params_full - params_removed == expected_drop}")


if __name__ == "__main__":
    main()
