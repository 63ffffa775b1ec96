"""Does fine-tuning a masked model cost throughput? Masked vs. the same model unmasked, in one run.

The model is the bundled demo model (GPT-2, 6 layers x 8 heads x 256) when it is built, else a randomly
initialised GPT-2 of the same shape (the script says which). Three copies are fine-tuned with
`sentinel.training.finetune` on the same token blocks (bundled corpus, or random tokens for the random
model): "unmasked" (no gates at all), "masked" (a --ratio share of heads gated to 0, their weight slices
guarded after every optimizer step) and, for reference, "removed" (the same heads physically removed).

The machine this was written on is shared and its load swings several-fold within minutes, so the copies
take turns: --rounds rounds, each running --steps optimizer steps of every copy back to back (rotating the
order; each copy keeps training across rounds). Throughput is the fine-tuner's own training tokens/s
(time inside optimizer steps only; evaluation and Trainer set-up excluded). The headline is the median
over rounds of each round's ratio masked / unmasked (target >= 0.9); medians of the raw throughputs are
printed too.

Run: python bench/finetune_throughput.py [--steps 2] [--rounds 15] [--ratio 0.3] [--device auto]
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
from datetime import datetime, timezone

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from sentinel.data import cut_blocks, join_documents, load_texts
from sentinel.demo.build import describe_machine, train_tokenizer
from sentinel.device import pick_device
from sentinel.models import BUNDLED_MODEL_DIR, load_model
from sentinel.pruning import mask_heads, remove_heads
from sentinel.training import FineTuneConfig, FineTuneData, finetune


def bundled_or_random(block: int, blocks_needed: int) -> tuple[torch.nn.Module, object, FineTuneData, str]:
    """(model, tokenizer, data, description): the bundled model on its corpus, else a same-shape random GPT-2."""
    if (BUNDLED_MODEL_DIR / "config.json").is_file():
        loaded = load_model(None, device="cpu")
        ids = join_documents(loaded.tokenizer, load_texts("bundled:validation"))
        blocks = cut_blocks(ids, block)
        return loaded.model, loaded.tokenizer, FineTuneData(blocks[:-2], blocks[-2:], block, "bundled"), "bundled"
    torch.manual_seed(0)
    config = GPT2Config(n_layer=6, n_head=8, n_embd=256, vocab_size=5120, n_positions=256)
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 5120, (blocks_needed + 2, block), generator=generator).tolist()
    data = FineTuneData(blocks[:-2], blocks[-2:], block, "random")
    tokenizer = train_tokenizer(["Only pad and eos ids are used: the data are random token ids."], 300, 256)
    return GPT2LMHeadModel(config), tokenizer, data, "random GPT-2 6x8x256 (bundled model not built)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per copy per round (default 2)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--ratio", type=float, default=0.3, help="share of heads masked (default 0.3)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    base, tokenizer, data, what = bundled_or_random(args.block_size, args.steps * args.batch_size)
    layers, heads = base.config.n_layer, base.config.n_head
    count = round(args.ratio * layers * heads)
    generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(layers * heads, generator=generator)[:count].tolist()
    plan: dict[int, list[int]] = {}
    for index in chosen:
        plan.setdefault(index // heads, []).append(index % heads)
    config = FineTuneConfig(max_steps=args.steps, learning_rate=3e-4, batch_size=args.batch_size,
                            block_size=args.block_size, eval_every=0, eval_max_tokens=2 * args.block_size,
                            warmup_ratio=0.0, device=str(device), weight_decay=0.01)

    names = ["unmasked", "masked", "removed"]
    models = {name: copy.deepcopy(base) for name in names}
    mask_heads(models["masked"], plan)
    remove_heads(models["removed"], plan)
    seen: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(args.rounds):
        order = names[round_ % 3:] + names[:round_ % 3]
        for name in order:
            seen[name].append(finetune(models[name], tokenizer, data, config).train_tokens_per_second)
    median = {n: statistics.median(v) for n, v in seen.items()}
    machine = describe_machine(device)
    print(f"model: {what}; {count} of {layers * heads} heads masked/removed; {args.rounds} rounds of {args.steps} "
          f"steps x batch {args.batch_size} x {args.block_size} tokens; {machine}; "
          f"{datetime.now(timezone.utc):%Y-%m-%d}")
    for name in names:
        runs = ", ".join(f"{v:.0f}" for v in seen[name])
        print(f"{name:>9}: median {median[name]:8.0f} train tokens/s  (runs: {runs})")
    for name in ("masked", "removed"):
        ratios = [a / b for a, b in zip(seen[name], seen["unmasked"])]
        listed = ", ".join(f"{r:.3f}" for r in ratios)
        target = "  (target >= 0.9)" if name == "masked" else ""
        print(f"{name} / unmasked: median of per-round ratios {statistics.median(ratios):.3f}{target}  "
              f"(rounds: {listed}; ratio of medians {median[name] / median['unmasked']:.3f})")


if __name__ == "__main__":
    main()
