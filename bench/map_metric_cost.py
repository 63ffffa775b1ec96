"""How long does each neuron and layer metric of the Maps page take on the bundled model?

Decides which metrics stay in the page's run and which go to the background job kind "unit-metrics"
(`sentinel.ui.metric_jobs.runs_in_background`): the Maps page's default sampling (8 blocks x 128 tokens of the bundled
validation text), one torch thread, rounds interleaved (every metric once per round, the order rotating) so machine
noise hits all alike; medians and ranges are reported. Run: python bench/map_metric_cost.py [--rounds N] [--threads T]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from sentinel.models import load_model
from sentinel.ui.analysis import block_size_for
from sentinel.ui.choices import MAP_SAMPLES, MAP_SEQ_LEN, SampleText
from sentinel.ui.metric_jobs import runs_in_background
from sentinel.ui.unit_maps import LAYER_METRICS, NEURON_METRICS, compute_unit_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(None)
    parameters = sum(p.numel() for p in loaded.model.parameters())
    size = block_size_for(loaded.model, MAP_SEQ_LEN)
    blocks = SampleText().blocks(loaded.tokenizer, size, MAP_SAMPLES * size)
    cases = [("neuron", m) for m in NEURON_METRICS] + [("layer", m) for m in LAYER_METRICS]
    seconds: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    for case in cases:                                                   # one untimed warm-up each
        compute_unit_map(loaded.model, loaded.tokenizer, *case, blocks)
    for index in range(args.rounds):
        for case in cases[index % len(cases):] + cases[:index % len(cases)]:
            seconds[case].append(compute_unit_map(loaded.model, loaded.tokenizer, *case, blocks).seconds)
    print(f"{parameters:,} parameters, {blocks.num_tokens:,} tokens, {args.threads} thread(s), {args.rounds} rounds")
    print("| unit | metric | median s | range s | page or job |")
    print("|---|---|---|---|---|")
    for (kind, metric), values in seconds.items():
        where = "job" if runs_in_background(metric, parameters, blocks.num_tokens) else "page"
        print(f"| {kind} | {metric} | {statistics.median(values):.3f} | {min(values):.3f}–{max(values):.3f} | {where} |")


if __name__ == "__main__":
    main()
