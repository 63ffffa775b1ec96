"""What does per-head analysis cost next to a plain forward pass, in time and in memory?

GPT-2-small shape (12 layers x 12 heads x 768, vocab 50257), random init, CPU, fp32, eager attention.

Time: entropy (hooked, layer by layer) + weight magnitude over 32 sequences x 128 tokens in
batches of 8, against one eager forward pass of the full model over the same batches, against
the transformer body alone (what the entropy pass runs: no LM head), and against an sdpa forward
for context. Rounds are interleaved (order rotating) so machine noise hits all alike; medians are reported.

Memory: each case runs in a fresh subprocess at 1 x 1024 tokens. After the model is built and
warmed up, the process's peak-RSS mark is reset (Linux /proc/self/clear_refs "5") and the rise of
VmHWM over VmRSS during the call is reported (tracemalloc cannot see torch's CPU allocations).
The rise is compared with one layer's attention map (1 x 12 x 1024 x 1024 fp32 = 48 MiB), with a
plain eager forward of the body, and with a forward that keeps every layer's map (output_attentions=True). Run: python bench/analysis_cost.py [--runs N] [--threads T] [--mem-repeats M]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from sentinel.metrics import attention_entropy, weight_magnitude

LAYERS, HEADS, HIDDEN, VOCAB = 12, 12, 768, 50257
MIB = 1024 * 1024


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=LAYERS, n_head=HEADS, n_embd=HIDDEN, vocab_size=VOCAB, n_positions=1024)
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config).eval()


def make_batches(sequences: int, length: int, batch: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (sequences, length), generator=generator)       # [sequences, length]
    return [{"input_ids": ids[i:i + batch], "attention_mask": torch.ones_like(ids[i:i + batch])}
            for i in range(0, sequences, batch)]


def forward_full(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for b in batches:
            model(**b, use_cache=False)


def forward_body(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for b in batches:
            model.transformer(**b, use_cache=False)


def analysis(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> None:
    attention_entropy(model, batches)
    weight_magnitude(model)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_cases(runs: int) -> dict[str, float]:
    model = make_model()
    sdpa = copy.deepcopy(model)
    sdpa.set_attn_implementation("sdpa")
    batches = make_batches(32, 128, 8)
    cases = {
        "eager forward (full model)": lambda: forward_full(model, batches),
        "eager forward (body only)": lambda: forward_body(model, batches),
        "sdpa forward (full model)": lambda: forward_full(sdpa, batches),
        "entropy + magnitude": lambda: analysis(model, batches),
    }
    for case in cases.values():                                     # warm-up
        case()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(cases[name]))
    return {name: statistics.median(values) for name, values in times.items()}


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1))


def child(mode: str) -> None:
    """Build the model, reset the peak-RSS mark, run one case at 1 x 1024 tokens, print RSS before and peak."""
    model = make_model()
    batches = make_batches(1, 1024, 1)
    analysis(model, make_batches(1, 16, 1))                           # touch the code paths at a tiny size
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")                                              # Linux: reset VmHWM to the current RSS
    before = _status_kib("VmRSS") * 1024
    if mode == "forward":
        forward_body(model, batches)
    elif mode == "analysis":
        analysis(model, batches)
    elif mode == "all_maps":
        with torch.no_grad():
            out = model.transformer(**batches[0], use_cache=False, output_attentions=True)
        assert len(out.attentions) == LAYERS
    print(json.dumps({"before": before, "peak": _status_kib("VmHWM") * 1024}))


def rss_of_child(mode: str, threads: int) -> dict[str, int]:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--threads", str(threads)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mem-repeats", type=int, default=3, help="fresh processes per memory case")
    parser.add_argument("--child", choices=["forward", "analysis", "all_maps"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child)
        return

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, {args.runs} interleaved runs")
    medians = time_cases(args.runs)
    base = medians["eager forward (full model)"]
    print("time, 32 x 128 tokens (batches of 8), median seconds:")
    for name, seconds in medians.items():
        print(f"  {name:28s} {seconds:7.3f} s   x{seconds / base:.2f} of the full eager forward")
    ratio_body = medians["entropy + magnitude"] / medians["eager forward (body only)"]
    print(f"  entropy + magnitude vs the body-only forward: x{ratio_body:.2f}")

    map_bytes = 1 * HEADS * 1024 * 1024 * 4
    rises = {}
    for mode in ("forward", "analysis", "all_maps"):
        samples = [rss_of_child(mode, args.threads) for _ in range(args.mem_repeats)]
        rises[mode] = statistics.median(rss["peak"] - rss["before"] for rss in samples)
    print(f"memory, 1 x 1024 tokens: median peak-RSS rise during the call over {args.mem_repeats} fresh processes "
          f"(one layer's attention map = {map_bytes / MIB:.0f} MiB):")
    for mode, label in (("forward", "eager forward (body)"), ("analysis", "entropy + magnitude"),
                        ("all_maps", "forward keeping all maps")):
        rise = rises[mode]
        print(f"  {label:26s} +{rise / MIB:5.0f} MiB = {rise / map_bytes:5.2f} maps   "
              f"(x{rise / rises['forward']:.2f} of the forward's rise)")


if __name__ == "__main__":
    main()
