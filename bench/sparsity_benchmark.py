"""Weight-level sparsity on the bundled model: perplexity, sizes and measured CPU speed (issue 12).

Parts (each writes bench/results/sparsity/<part>.json; run them one at a time on a shared machine):
  oneshot      method x sparsity (30/50/70/90% unstructured, 2:4) one-shot perplexity, non-zero params, bytes
               (--scopes row: l1 and wanda compared within each output row, written to oneshot-row.json)
  finetune     a subset of cells fine-tuned 50 steps with the zeros held (and one with distillation),
               plus gradual (cubic, 0 -> 70% over the first 38 of 50 steps) and a quick lottery ticket
  sensitivity  each matrix alone at 10% and 50%, then the suggested per-matrix plan vs uniform l1
  speed        bundled model: dense vs sparse (dense kernels) vs int8, interleaved; int8 perplexity
  synthetic    one large Linear (4096 x 4096, 128 tokens): dense, dense-with-zeros, torch.sparse CSR, int8

Run: python bench/sparsity_benchmark.py --part oneshot [--threads 1]
Evaluation: the bundled validation split (23,948 tokens, windows of 256); calibration for gradient/snip/wanda:
16 x 128 tokens from the start of the bundled train split.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from sentinel.evaluation.paired import interleaved_speed
from sentinel.models import load_model
from sentinel.sparsity import SparsityConfig, make_permanent, sparsify, sparsity_stats
from sentinel.sparsity.quantize import int8_bytes, quantize_int8, save_int8
from sentinel.sparsity.schedule import GradualSchedule, LotteryConfig, finetune_sparse, lottery_ticket, start_gradual
from sentinel.sparsity.sensitivity import layer_sensitivity, suggest_sparsity
from sentinel.sparsity.storage import size_report
from sentinel.sparsity.text import calibration_blocks, evaluator
from sentinel.training.config import FineTuneConfig
from sentinel.training.finetune import load_finetune_data

RESULTS = Path(__file__).parent / "results" / "sparsity"
METHODS = ["l1", "l2", "random", "gradient", "snip", "wanda"]
LEVELS: list[Any] = [0.3, 0.5, 0.7, 0.9, "2:4"]


def machine() -> dict[str, Any]:
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"machine": f"{platform.machine()} {platform.processor() or ''} 2-core shared CPU, no GPU".strip(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "load_average": load,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def config_for(method: str, level: Any, scope: str = "layer") -> SparsityConfig:
    if level == "2:4":
        return SparsityConfig(method, pattern="2:4")
    return SparsityConfig(method, float(level), scope=scope)


def write(part: str, data: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{part}.json"
    path.write_text(json.dumps({**machine(), **data}, indent=2))
    print(f"wrote {path}")


def oneshot(loaded, evaluate, calibration, scopes: list[str]) -> None:
    dense_ppl = evaluate(loaded.model)
    rows = []
    sizes: dict[str, Any] = {}
    for scope in scopes:
        for method in METHODS:
            for level in LEVELS:
                if scope == "global" and (level == "2:4" or method not in ("l1", "snip", "wanda")):
                    continue
                if scope == "row" and (level == "2:4" or method not in ("l1", "wanda")):
                    continue
                model = copy.deepcopy(loaded.model)
                done = sparsify(model, config_for(method, level, scope), calibration)
                make_permanent(model)
                ppl = evaluate(model)
                stats = sparsity_stats(model)
                key = str(level)
                if key not in sizes:          # bytes depend only on how many zeros, not which
                    with tempfile.TemporaryDirectory() as folder:
                        size = size_report(model, int8_bytes(save_int8(quantize_int8(model), None, Path(folder))))
                    sizes[key] = size.to_dict()
                rows.append({"method": method, "scope": scope, "level": key, "perplexity": ppl,
                             "sparsity": stats.sparsity, "nonzero_parameters": stats.nonzero_parameters,
                             "seconds": done.seconds})
                print(f"{scope:6} {method:8} {key:4} ppl {ppl:10.3f}  ({done.seconds:.1f}s)", flush=True)
    part = "oneshot" if scopes == ["layer", "global"] else "oneshot-" + "-".join(scopes)
    write(part, {"dense_perplexity": dense_ppl, "rows": rows, "sizes": sizes})


FT_CELLS = [("l1", 0.5), ("wanda", 0.5), ("snip", 0.5), ("l1", 0.7), ("wanda", 0.7), ("wanda", "2:4"), ("l1", 0.9)]


def finetune_part(loaded, evaluate, calibration, steps: int) -> None:
    tokenizer = loaded.tokenizer
    ft = FineTuneConfig(max_steps=steps, learning_rate=1e-4, batch_size=8, block_size=128, eval_every=0,
                        eval_max_tokens=2048, device="cpu")
    data = load_finetune_data(tokenizer, None, 128, max_validation_tokens=2048)
    rows = []

    def record(name: str, model, oneshot_ppl, seconds, extra=None) -> None:
        make_permanent(model)
        ppl = evaluate(model)
        rows.append({"cell": name, "perplexity_oneshot": oneshot_ppl, "perplexity_finetuned": ppl,
                     "sparsity": sparsity_stats(model).sparsity, "seconds": seconds, **(extra or {})})
        print(f"{name:28} one-shot {oneshot_ppl} -> {ppl:.3f} ({seconds:.0f}s)", flush=True)

    dense = copy.deepcopy(loaded.model)
    start = time.perf_counter()
    finetune_sparse(dense, tokenizer, data, ft)                     # the dense model gets the same 50 steps
    record("dense + 50 steps", dense, None, time.perf_counter() - start)
    for cell in FT_CELLS + [("wanda", 0.5, "distill")]:
        method, level = cell[0], cell[1]
        distill = len(cell) == 3
        model = copy.deepcopy(loaded.model)
        sparsify(model, config_for(method, level), calibration)
        oneshot_ppl = evaluate(model)
        start = time.perf_counter()
        config = FineTuneConfig(**{**ft.to_dict(), "distill": distill})
        finetune_sparse(model, tokenizer, data, config, teacher=loaded.model if distill else None)
        record(f"{method} {level}{' distill' if distill else ''}", model, oneshot_ppl, time.perf_counter() - start)
    model = copy.deepcopy(loaded.model)
    start = time.perf_counter()
    schedule = GradualSchedule(initial=0.0, final=0.7, start=0, end=round(0.75 * steps), every=max(1, steps // 10))
    callback = start_gradual(model, schedule)
    finetune_sparse(model, tokenizer, data, ft, callback=callback)
    record("gradual l1 0->0.7", model, None, time.perf_counter() - start, {"history": callback.history})
    model = copy.deepcopy(loaded.model)
    start = time.perf_counter()
    lottery = LotteryConfig(rounds=2, rate=1 - 0.5 ** 0.5, steps=steps // 2, scope="global")
    result = lottery_ticket(model, tokenizer, data, ft, lottery)
    record("lottery l1 global 2 rounds -> 0.5", model, None, time.perf_counter() - start, {"lottery": result.to_dict()})
    write("finetune", {"steps": steps, "rows": rows, "finetune": ft.to_dict()})


def sensitivity_part(loaded, evaluate_full, tokens: int) -> None:
    small, info = evaluator(loaded.tokenizer, None, 256, max_tokens=tokens)
    start = time.perf_counter()
    result = layer_sensitivity(loaded.model, small, levels=(0.1, 0.5))
    seconds = time.perf_counter() - start
    plans = []
    for average in (0.5, 0.7):
        suggestion = suggest_sparsity(result, average=average)
        planned = copy.deepcopy(loaded.model)
        sparsify(planned, SparsityConfig("l1", average, per_matrix=suggestion))
        uniform = copy.deepcopy(loaded.model)
        sparsify(uniform, SparsityConfig("l1", average))
        plans.append({"average": average, "suggestion": suggestion,
                      "planned_sparsity": sparsity_stats(planned).sparsity,
                      "perplexity_planned": evaluate_full(planned), "perplexity_uniform": evaluate_full(uniform)})
        print(plans[-1]["perplexity_planned"], plans[-1]["perplexity_uniform"], flush=True)
    write("sensitivity", {"probe_text": info, "seconds": seconds, **result.to_dict(), "plans": plans})


def speed_part(loaded, evaluate, calibration, repeats: int) -> None:
    rows = []
    dense = loaded.model
    dense_int8 = quantize_int8(dense)
    rows.append({"level": "dense", "perplexity_int8": evaluate(dense_int8)})
    models = {"dense fp32": dense, "dense int8": dense_int8}
    for level in (0.5, 0.9, "2:4"):
        model = copy.deepcopy(dense)
        sparsify(model, config_for("wanda", level), calibration)
        make_permanent(model)
        q = quantize_int8(model)
        rows.append({"level": str(level), "perplexity_fp32": evaluate(model), "perplexity_int8": evaluate(q)})
        models[f"wanda {level} fp32"] = model
        models[f"wanda {level} int8"] = q
    speed = interleaved_speed(models, loaded.tokenizer, repeats=repeats, prompt_tokens=128, new_tokens=32).report()
    for row in speed["rows"]:
        print(f"{row['name']:20} prefill {row['prefill_tokens_per_s']:8.0f} decode "
              f"{row['decode_tokens_per_s']:6.1f}  {row['verdict']}", flush=True)
    write("speed", {"perplexity": rows, "speed": speed})


def synthetic_part(repeats: int, size: int = 4096, tokens: int = 128) -> None:
    from sentinel.sparsity.masks import nm_mask, select_masks

    torch.manual_seed(0)
    linear = torch.nn.Linear(size, size, bias=False).eval()
    x = torch.randn(tokens, size)
    cases: dict[str, Any] = {"dense": lambda: linear(x)}
    for level in (0.5, 0.7, 0.9, "2:4"):
        w = linear.weight.detach()
        keep = nm_mask(w.abs(), 2, 4) if level == "2:4" else select_masks({"w": w.abs()}, float(level))["w"]
        zeroed = w * keep
        csr = zeroed.to_sparse_csr()
        cases[f"dense kernel, {level} zeros"] = (lambda z=zeroed: x @ z.t())
        cases[f"CSR sparse, {level}"] = (lambda c=csr: torch.sparse.mm(c, x.t()).t())
    qlin = quantize_int8_linear(linear)
    cases["int8 dynamic (dense)"] = lambda: qlin(x)
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.no_grad():
        for fn in cases.values():
            fn()
        for _ in range(repeats):
            for name, fn in cases.items():
                start = time.perf_counter()
                for _ in range(5):
                    fn()
                times[name].append((time.perf_counter() - start) / 5)
    base = statistics.median(times["dense"])
    rows = [{"case": name, "ms": 1000 * statistics.median(t), "min_ms": 1000 * min(t), "max_ms": 1000 * max(t),
             "speed_vs_dense": base / statistics.median(t)} for name, t in times.items()]
    for row in rows:
        print(f"{row['case']:28} {row['ms']:8.2f} ms  x{row['speed_vs_dense']:.2f}", flush=True)
    write("synthetic", {"shape": [size, size], "tokens": tokens, "repeats": repeats, "rows": rows})


def quantize_int8_linear(linear: torch.nn.Linear) -> torch.nn.Module:
    """The same torch.ao dynamic quantization quantize.py applies, on a bare Linear."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = torch.nn.Sequential(copy.deepcopy(linear))
        return quantize_dynamic(wrapper, {"0": per_channel_dynamic_qconfig}, dtype=torch.qint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", required=True, choices=["oneshot", "finetune", "sensitivity", "speed", "synthetic"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sensitivity-tokens", type=int, default=4096)
    parser.add_argument("--scopes", default="layer,global", help="oneshot: scopes to run (layer, global, row)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.part == "synthetic":
        synthetic_part(args.repeats)
        return
    loaded = load_model(None, device="cpu")
    evaluate, _ = evaluator(loaded.tokenizer, None, 256)
    calibration = calibration_blocks(loaded.tokenizer, None, 16, 128)
    if args.part == "oneshot":
        oneshot(loaded, evaluate, calibration, args.scopes.split(","))
    elif args.part == "finetune":
        finetune_part(loaded, evaluate, calibration, args.steps)
    elif args.part == "sensitivity":
        sensitivity_part(loaded, evaluate, args.sensitivity_tokens)
    else:
        speed_part(loaded, evaluate, calibration, args.repeats)


if __name__ == "__main__":
    main()
