"""How readable is a bundled demo model, and how visibly does head pruning damage it? One script, any model folder.

For each --model folder (a demo model built by `sentinel build-demo-model`, with its bundled corpus):
  1. validation perplexity (non-overlapping windows of the model's length) and the add-one unigram baseline
     fitted on the train split, on the same predicted tokens (sentinel.demo.card);
  2. perplexity on English text from a source neither model saw: the `fortunes` file of Debian's fortunes-min
     1.99.1 (BSD licence, bundled in assets/text/fortunes-min/), one quotation per document;
  3. loop-freeness and corpus-bigram rate (sentinel.demo.quality) of 10 greedy 40-token continuations of the
     model's prompts (sentinel.demo.prompts);
  4. the same after removing 50% of the heads at random (seeded, no fine-tuning), and after 50 steps of
     `sentinel.training.finetune` (lr 1e-4, batch 8 x 128 tokens of the train split) of that pruned model;
  5. greedy text for the first 5 prompts: base, 30% / 50% of heads removed by gradient importance and at random,
     and the random-50% model after the 50 fine-tuning steps.
Writes JSON and a Markdown summary (the tables the README, BENCHMARKS.md and the card show).

Run: python bench/demo_model_quality.py --model assets/models/stories-gpt2 --model assets/models/stdlib-gpt2
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from sentinel.data import cut_blocks, join_documents
from sentinel.demo.build import describe_machine, load_corpus_split
from sentinel.demo.card import scored_targets, unigram_perplexity
from sentinel.demo.prompts import SAMPLE_COUNT, prompts_for
from sentinel.demo.quality import corpus_bigrams, text_quality
from sentinel.evaluation.perplexity import perplexity
from sentinel.evaluation.size import parameter_count
from sentinel.generation import generate_text
from sentinel.metrics import compute_scores
from sentinel.models import load_model
from sentinel.pruning import remove_heads
from sentinel.pruning.strategies import get_strategy
from sentinel.training import FineTuneConfig, FineTuneData, finetune

logger = logging.getLogger("demo_model_quality")
REPO = Path(__file__).resolve().parent.parent
UNSEEN_TEXT = REPO / "assets" / "text" / "fortunes-min" / "fortunes"
UNSEEN_NAME = "fortunes-min 1.99.1 `fortunes` (Debian, BSD licence)"
NEW_TOKENS = 40
FT_BLOCK = 128


def unseen_documents(path: Path = UNSEEN_TEXT) -> list[str]:
    """The quotations of a fortune file (separated by lines holding only '%'), attributions included."""
    text = path.read_text(encoding="utf-8", errors="strict")
    return [doc.strip() for doc in text.split("\n%\n") if doc.strip() and doc.strip() != "%"]


def continuations(model: torch.nn.Module, tokenizer: Any, prompts: tuple[str, ...]) -> list[str]:
    """Greedy NEW_TOKENS-token continuations (text after the prompt) of every prompt."""
    return [generate_text(model, tokenizer, p, max_new_tokens=NEW_TOKENS, greedy=True).text for p in prompts]


def evaluate_model(model_dir: Path, seed: int, finetune_steps: int) -> dict[str, Any]:
    """All measurements of one model folder (see the module docstring)."""
    started = time.perf_counter()
    loaded = load_model(str(model_dir), device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    seq_len = model.config.n_positions
    prompts = prompts_for(model_dir.name)
    train_docs = load_corpus_split(model_dir, "train")
    train_ids = join_documents(tokenizer, train_docs)
    val_ids = join_documents(tokenizer, load_corpus_split(model_dir, "validation"))
    unseen_ids = join_documents(tokenizer, unseen_documents())
    known = corpus_bigrams(train_docs)

    def ppl(m: torch.nn.Module, ids: list[int]) -> float:
        return perplexity(m, tokenizer, ids, seq_len=seq_len, batch_size=16).perplexity

    def snapshot(m: torch.nn.Module) -> dict[str, Any]:
        return {"validation_perplexity": ppl(m, val_ids), "unseen_perplexity": ppl(m, unseen_ids),
                "text": text_quality(continuations(m, tokenizer, prompts), known).to_dict()}

    validation = perplexity(model, tokenizer, val_ids, seq_len=seq_len, batch_size=16)
    report: dict[str, Any] = {
        "model": model_dir.name, "parameters": parameter_count(model),
        "layers_x_heads": [loaded.layout.num_layers, loaded.layout.num_heads],
        "validation_tokens_scored": validation.tokens_evaluated,
        "unigram_perplexity": unigram_perplexity(train_ids, scored_targets(val_ids, seq_len), len(tokenizer)),
        "unseen_text": UNSEEN_NAME, "unseen_tokens": len(unseen_ids), "prompts": list(prompts),
    }
    report["base"] = snapshot(model)
    logger.info("%s base: %s", model_dir.name, {k: v for k, v in report["base"].items() if k != "text"})

    train_blocks = cut_blocks(train_ids, FT_BLOCK)
    order = torch.randperm(len(train_blocks), generator=torch.Generator().manual_seed(seed)).tolist()
    score_batches = [torch.tensor([train_blocks[i] for i in order[j:j + 4]]) for j in range(0, 32, 4)]
    gradient = compute_scores(model, ["gradient"], score_batches, seed=seed)
    samples: dict[str, list[str]] = {"base": report["base"]["text"]["continuations"][:SAMPLE_COUNT]}
    variants: dict[str, dict[str, Any]] = {}
    random_50 = None
    for strategy in ("gradient", "random"):
        for ratio in (0.3, 0.5):
            pruned = copy.deepcopy(model)
            chooser = get_strategy(strategy, pruning_ratio=ratio, seed=seed)
            plan = chooser.select_heads_to_prune(pruned, gradient if strategy == "gradient" else None)
            remove_heads(pruned, plan)
            key = f"{strategy}_{int(ratio * 100)}"
            samples[key] = continuations(pruned, tokenizer, prompts[:SAMPLE_COUNT])
            variants[key] = {"heads_removed": sum(len(h) for h in plan.values()),
                             "validation_perplexity": ppl(pruned, val_ids)}
            if key == "random_50":
                random_50 = pruned
    report["pruned"] = variants
    assert random_50 is not None
    report["random_50"] = snapshot(random_50)
    logger.info("%s random 50%%: %s", model_dir.name,
                {k: v for k, v in report["random_50"].items() if k != "text"})

    ft_train = [train_blocks[i] for i in order[32:]]
    ft_val = cut_blocks(val_ids, FT_BLOCK)[:16]
    config = FineTuneConfig(max_steps=finetune_steps, learning_rate=1e-4, batch_size=8, block_size=FT_BLOCK,
                            eval_every=0, eval_max_tokens=len(ft_val) * FT_BLOCK, log_every=10, seed=seed,
                            device="cpu")
    finetune(random_50, tokenizer, FineTuneData(ft_train, ft_val, FT_BLOCK, f"{model_dir.name}:train"), config)
    report["random_50_finetuned"] = snapshot(random_50)
    samples["random_50_finetuned"] = report["random_50_finetuned"]["text"]["continuations"][:SAMPLE_COUNT]
    report["finetune"] = {"steps": finetune_steps, "learning_rate": 1e-4, "batch": 8, "block": FT_BLOCK}
    report["samples"] = [{"prompt": p, **{k: v[i] for k, v in samples.items()}}
                         for i, p in enumerate(prompts[:SAMPLE_COUNT])]
    report["seconds"] = round(time.perf_counter() - started, 1)
    logger.info("%s finetuned: %s", model_dir.name,
                {k: v for k, v in report["random_50_finetuned"].items() if k != "text"})
    return report


def sample_labels(steps: int) -> tuple[tuple[str, str], ...]:
    """(key, label) of each state the samples show."""
    return (("base", "base model"), ("gradient_30", "30% heads removed, gradient importance"),
            ("gradient_50", "50% removed, gradient"), ("random_30", "30% removed at random"),
            ("random_50", "50% removed at random"),
            ("random_50_finetuned", f"50% random, then {steps} fine-tuning steps"))


def measures_table(reports: list[dict[str, Any]]) -> str:
    """The Markdown table of the measures, one row per model and state."""
    rows = ["| model | state | validation ppl | unigram ppl | unseen-text ppl | loop-freeness | corpus-bigram rate |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for r in reports:
        for key, label in (("base", "base"), ("random_50", "50% heads removed at random"),
                           ("random_50_finetuned", f"… + {r['finetune']['steps']} fine-tuning steps")):
            s = r[key]
            unigram = f"{r['unigram_perplexity']:.2f}" if key == "base" else ""
            rows.append(f"| {r['model']} | {label} | {s['validation_perplexity']:.2f} | {unigram} | "
                        f"{s['unseen_perplexity']:.1f} | {s['text']['loop_freeness']:.3f} | "
                        f"{s['text']['corpus_bigram_rate']:.3f} |")
    return "\n".join(rows)


def samples_markdown(report: dict[str, Any]) -> str:
    """Greedy text for the sample prompts, every pruning state under each prompt."""
    out = []
    for i, sample in enumerate(report["samples"], 1):
        out.append(f"{i}. **{sample['prompt']}**")
        for key, label in sample_labels(report["finetune"]["steps"]):
            text = sample[key].replace("\n", " ⏎ ").strip()
            out.append(f"   - *{label}:* {text}")
    return "\n".join(out)


def card_section(reports: list[dict[str, Any]], name: str) -> str:
    """The Markdown the model card shows (sentinel.demo.card reads it from <model>/quality.md)."""
    model = next((r for r in reports if r["model"] == name), None)
    if model is None:
        raise SystemExit(f"--card-section {name}: no report for that model in this run or --include")
    sources = "; ".join(f"{r['model']}: {r['measured']['date']}, `{r['measured']['command']}`" for r in reports)
    return (f"Measured on {model['measured']['machine']} ({sources}). Unseen text: {model['unseen_text']}, "
            f"{model['unseen_tokens']:,} tokens with this tokenizer.\n\n" + measures_table(reports)
            + f"\n\nGreedy text ({NEW_TOKENS} new tokens, prompt in bold):\n\n" + samples_markdown(model) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="demo model folder (repeatable)")
    parser.add_argument("--include", action="append", default=[],
                        help="JSON of an earlier run of this script: its models join the tables (as measured then)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--card-section", default=None, metavar="MODEL",
                        help="also write assets/models/MODEL/quality.md, the section its card shows")
    parser.add_argument("--out", default="bench/results/demo_model_quality",
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if not args.model and not args.include:
        parser.error("give at least one --model (or --include)")
    reports = [evaluate_model(Path(m), args.seed, args.finetune_steps) for m in args.model]
    meta: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": describe_machine(torch.device("cpu")) + " (2-core CPU shared with other jobs, no GPU)",
            "command": " ".join(["python", "bench/demo_model_quality.py", *map(shlex.quote, sys.argv[1:])])}
    for r in reports:
        r["measured"] = meta
    earlier = [json.loads(Path(path).read_text(encoding="utf-8")) for path in args.include]
    for run in earlier:
        for r in run["reports"]:
            r.setdefault("measured", run["meta"])
    reports += [r for run in earlier for r in run["reports"]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "reports": reports}, indent=2) + "\n",
                                        encoding="utf-8")
    md = [f"Measured {meta['date']} on {meta['machine']}: `{meta['command']}`"]
    md += [f"{r['model']}: measured {r['measured']['date']}, `{r['measured']['command']}`" for r in reports
           if r["measured"] is not meta]
    md += ["", measures_table(reports)]
    for r in reports:
        md += ["", f"Greedy text of {r['model']} ({NEW_TOKENS} new tokens; prompt in bold):", "", samples_markdown(r)]
    out.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    if args.card_section:
        section = REPO / "assets" / "models" / args.card_section / "quality.md"
        section.write_text(card_section(reports, args.card_section), encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
