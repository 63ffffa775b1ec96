"""Does physical removal of heads, neurons and blocks deliver the speedup its FLOP count predicts, and what do masks cost?

Two random-init shapes, CPU, fp32, batch 4 x 256 tokens, timing the transformer body only (embeddings,
blocks, final norm; not the LM head):
- GPT-2-small: 12 layers x 12 heads x 768, MLP 3072;
- Llama-shaped GQA: 8 layers, hidden 1024, 16 query / 4 K/V heads of 64, MLP 2816.
Cases, each chosen with `select_budget` (lowest weight magnitude; blocks by a seeded random score):
(i) 50% of heads in every layer (whole K/V groups on the GQA model), (ii) 50% of MLP neurons in every
layer, (iii) both, (iv) 25% of blocks. Variants run round-robin with a rotating order after a warm-up;
medians are reported, and the same ratios from each variant's fastest run (robust when the
machine is shared). Predicted FLOPs and parameters come from the plan's unit costs, measured ones
from the pruned model. Also: mask overhead with head and neuron masks together, and decode tokens/s
for (iii). Run: python bench/structural_speedup.py [--runs N] [--threads 1] [--shape gpt2|llama|both]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from sentinel import apply_plan
from sentinel.evaluation.size import parameter_count
from sentinel.metrics import compute_scores
from sentinel.models.flops import forward_flops
from sentinel.pruning.budget import select_budget

CASES = {
    "(i) 50% heads": ("heads=0.5", ("head",)),
    "(ii) 50% neurons": ("neurons=0.5", ("neuron",)),
    "(iii) 50% heads + 50% neurons": ("heads=0.5,neurons=0.5", ("head", "neuron")),
    "(iv) 25% blocks": ("layers=0.25", ("layer",)),
}


def build(shape: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if shape == "gpt2":
        config = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=1024)
        config._attn_implementation = "sdpa"
        return GPT2LMHeadModel(config).eval()
    config = LlamaConfig(num_hidden_layers=8, hidden_size=1024, num_attention_heads=16, num_key_value_heads=4,
                         head_dim=64, intermediate_size=2816, vocab_size=32000, max_position_embeddings=1024)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def body(model: torch.nn.Module) -> torch.nn.Module:
    return model.transformer if hasattr(model, "transformer") else model.model


def time_once(model: torch.nn.Module, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        body(model)(ids)
    return time.perf_counter() - start


def decode_tokens_per_s(model: torch.nn.Module, prompt: torch.Tensor, new: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True,
                       attention_mask=torch.ones_like(prompt), pad_token_id=0)
    return new / (time.perf_counter() - start)


def run_shape(shape: str, runs: int, batch: int, seq: int) -> None:
    full = build(shape)
    scores = {kind: compute_scores(full, [metric], kind=kind, seed=3)[metric]
              for kind, metric in (("head", "magnitude"), ("neuron", "magnitude"), ("layer", "random"))}
    models = {"unpruned": full}
    predictions = {}
    for name, (target, kinds) in CASES.items():
        result = select_budget(full, {k: scores[k] for k in kinds}, target, allocation="uniform" if "layer" not in
                               kinds else "global", min_heads=0, min_neurons=0, whole_kv_groups=True, seq_len=seq)
        pruned = copy.deepcopy(full)
        apply_plan(pruned, result.plan, "remove")
        models[name] = pruned
        predictions[name] = result
    masked = copy.deepcopy(full)
    apply_plan(masked, predictions["(iii) 50% heads + 50% neurons"].plan, "mask")
    models["masked (iii)"] = masked

    ids = torch.randint(0, full.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(1))
    for model in models.values():
        time_once(model, ids)
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_once(models[name], ids))
    med = {name: statistics.median(t) for name, t in times.items()}
    spread = {name: (min(t), max(t)) for name, t in times.items()}

    print(f"\n== {shape}: {full.config.num_hidden_layers} layers, batch {batch} x {seq} tokens, fp32, "
          f"{runs} runs (median; min-max) ==")
    flops_full = forward_flops(full, seq, lm_head=False)
    print(f"{'variant':32s} {'body ms':>9s} {'min-max':>15s} {'measured':>9s} {'FLOP-pred':>9s} {'ratio':>6s} "
          f"{'min-ratio':>9s} {'params':>13s} {'pred. params':>13s} {'exact':>5s}")
    for name in names:
        lo, hi = spread[name]
        row = f"{name:32s} {med[name] * 1000:9.1f} {lo * 1000:7.0f}-{hi * 1000:<7.0f}"
        if name in predictions:
            p = predictions[name]
            measured = med["unpruned"] / med[name]
            predicted = p.flops_before / p.flops_after
            actual = parameter_count(models[name])
            assert forward_flops(models[name], seq, lm_head=False) == p.flops_after, "FLOP prediction differs from the pruned model"
            best = spread["unpruned"][0] / lo / predicted          # the same ratio from the fastest runs
            row += (f" {measured:8.3f}x {predicted:8.3f}x {measured / predicted:6.3f} {best:9.3f} {actual:13,d} "
                    f"{p.total_params_after:13,d} {str(actual == p.total_params_after):>5s}")
        elif name == "masked (iii)":
            row += (f"   mask overhead vs unpruned: {(med[name] / med['unpruned'] - 1) * 100:+.2f}% median, "
                    f"{(lo / spread['unpruned'][0] - 1) * 100:+.2f}% fastest runs (target <= 3%)")
        print(row)
    print(f"body FLOPs/token at {seq} tokens: unpruned {flops_full:,}")
    prompt = ids[:1, :64]
    pruned = models["(iii) 50% heads + 50% neurons"]
    decode = {"unpruned": [], "(iii)": []}
    for _ in range(3):
        decode["unpruned"].append(decode_tokens_per_s(full, prompt, 32))
        decode["(iii)"].append(decode_tokens_per_s(pruned, prompt, 32))
    d0, d3 = statistics.median(decode["unpruned"]), statistics.median(decode["(iii)"])
    print(f"decode (batch 1, 64-token prompt, 32 new tokens, KV cache, median of 3): unpruned {d0:.1f} tok/s, "
          f"(iii) {d3:.1f} tok/s, {d3 / d0:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--shape", choices=["gpt2", "llama", "both"], default="both")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    for shape in (("gpt2", "llama") if args.shape == "both" else (args.shape,)):
        run_shape(shape, args.runs, args.batch, args.seq)


if __name__ == "__main__":
    main()
