"""Evaluate a built demo model and write its model card (README.md) from measured numbers only."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sentinel.demo.build import BUILD_INFO_FILE, SAMPLE_PROMPTS, load_corpus_split
from sentinel.demo.corpus import DEFAULT_MAX_VALIDATION_CHARS
from sentinel.demo.prompts import PROMPTS
from sentinel.errors import DataError, ModelLoadError

logger = logging.getLogger(__name__)

CARD_METRICS_FILE = "card_metrics.json"
QUALITY_FILE = "quality.md"   # optional: bench/demo_model_quality.py's Markdown, copied in; shown on the card
SAMPLE_NEW_TOKENS = 40
ENTROPY_BATCHES = 8


@dataclass
class CardMetrics:
    """The measured figures the card reports; entropy is None until computed with sentinel.metrics."""

    validation_perplexity: float
    validation_nll: float
    validation_tokens_evaluated: int
    window_length: int
    unigram_perplexity: float
    unigram_train_tokens: int
    vocab_size: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    entropy_normalized_min: float | None = None
    entropy_normalized_max: float | None = None
    entropy_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for card_metrics.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CardMetrics:
        """Inverse of `to_dict`."""
        return cls(**data)


def scored_targets(ids: list[int], seq_len: int) -> list[int]:
    """The tokens `perplexity` scores with non-overlapping windows: all but the first of each window."""
    return [token for index, token in enumerate(ids) if index % seq_len != 0]


def unigram_perplexity(train_ids: list[int], targets: list[int], vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model estimated on `train_ids`, over `targets`.

    p(t) = (count_train(t) + 1) / (N_train + V), V the full tokenizer vocabulary (special tokens included).
    """
    if not targets:
        raise DataError("No target tokens for the unigram baseline.")
    counts = Counter(train_ids)
    denominator = len(train_ids) + vocab_size
    nll = -sum(math.log((counts.get(t, 0) + 1) / denominator) for t in targets) / len(targets)
    return math.exp(nll)


def corpus_kind(model_dir: str | Path) -> str:
    """'stdlib' or 'stories': which corpus the model in `model_dir` was built from (older builds: stdlib)."""
    info_path = Path(model_dir) / BUILD_INFO_FILE
    if not info_path.is_file():
        return "stdlib"
    return json.loads(info_path.read_text(encoding="utf-8"))["config"].get("corpus", "stdlib")


def card_prompts(model_dir: str | Path) -> tuple[str, ...]:
    """The card's three greedy-sample prompts, fitting the model's corpus."""
    if corpus_kind(model_dir) == "stories":
        return PROMPTS["stories-gpt2"][:len(SAMPLE_PROMPTS)]
    return SAMPLE_PROMPTS


def compute_card_metrics(model_dir: str | Path, with_entropy: bool = True) -> CardMetrics:
    """Validation perplexity, unigram baseline, greedy samples and (when asked) normalised entropy range."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sentinel.data import cut_blocks, join_documents
    from sentinel.evaluation.perplexity import perplexity
    from sentinel.generation import generate_text

    model_dir = Path(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    except OSError as err:
        raise ModelLoadError(f"Cannot load the demo model from {model_dir} ({err}); build it first.") from None
    seq_len = model.config.n_positions
    train_ids = join_documents(tokenizer, load_corpus_split(model_dir, "train"))
    validation_ids = join_documents(tokenizer, load_corpus_split(model_dir, "validation"))
    result = perplexity(model, tokenizer, validation_ids, seq_len=seq_len, batch_size=16)
    targets = scored_targets(validation_ids, seq_len)
    if len(targets) != result.tokens_evaluated:
        raise DataError(f"Unigram targets ({len(targets)}) differ from the tokens perplexity scored "
                        f"({result.tokens_evaluated}); the two must use the same tokens.")
    unigram = unigram_perplexity(train_ids, targets, len(tokenizer))
    samples = []
    new_tokens = min(SAMPLE_NEW_TOKENS, seq_len // 2)  # toy builds in tests have very few positions
    for prompt in card_prompts(model_dir):
        generated = generate_text(model, tokenizer, prompt, max_new_tokens=new_tokens, greedy=True)
        samples.append({"prompt": prompt, "continuation": generated.text, "new_tokens": generated.new_tokens})
    metrics = CardMetrics(
        validation_perplexity=result.perplexity, validation_nll=result.nll,
        validation_tokens_evaluated=result.tokens_evaluated, window_length=seq_len, unigram_perplexity=unigram,
        unigram_train_tokens=len(train_ids), vocab_size=len(tokenizer), samples=samples,
    )
    if with_entropy:
        from sentinel.data import TextBlocks
        from sentinel.metrics.entropy import attention_entropy

        blocks = TextBlocks(cut_blocks(validation_ids, seq_len), seq_len, "bundled:validation", 0,
                            tokenizer.pad_token_id)
        _, normalized = attention_entropy(model, blocks.dataloader(batch_size=4), num_batches=ENTROPY_BATCHES)
        values = normalized.values[normalized.scored]
        metrics.entropy_normalized_min = float(values.min())
        metrics.entropy_normalized_max = float(values.max())
        metrics.entropy_tokens = int(normalized.meta.get("tokens", 0))
    return metrics


def _fmt(value: float | None, digits: int = 3) -> str:
    """A number for the card, or an explicit 'not computed'."""
    return "not computed" if value is None else f"{value:.{digits}f}"


def _stdlib_head(config: dict[str, Any], corpus: dict[str, Any], build_info: dict[str, Any]) -> str:
    """Title, purpose and corpus section of the docstring model's card."""
    return f"""# stdlib-gpt2 — Sentinel's bundled demo model

A small GPT-2 trained from scratch on the docstrings of the Python standard library, so Sentinel can show
head pruning offline with a model that has learnt something real. It is a demo, not a useful assistant.

## Corpus
- Source: module, class and function docstrings (`ast.get_docstring(clean=True)`) of every `.py` file under
  `{corpus['stdlib_dir']}`, parsed with `ast` and never imported; test folders, `site-packages`,
  `turtledemo`, `__phello__` and `Tools` skipped; files sorted by relative path, docstrings in `ast.walk` order.
- Split by module: a module goes to validation when the SHA-1 of its relative path, read as a fraction, is below
  {config['validation_fraction']} (validation capped at {DEFAULT_MAX_VALIDATION_CHARS:,} characters; overflow modules go
  to train).
- Train: {corpus['train_documents']:,} docstrings from {len(corpus['train_modules'])} modules
  ({corpus['train_chars']:,} characters, {build_info['train_tokens']:,} tokens).
  Validation: {corpus['validation_documents']:,} docstrings from {len(corpus['validation_modules'])} modules
  ({corpus['validation_chars']:,} characters, {build_info['validation_tokens']:,} tokens).
- The exact text is bundled in `corpus/`: `train.jsonl.gz` and `validation.jsonl`, one JSON object
  `{{"text": docstring}}` per line; `manifest.json` lists the modules of each split. Documents are joined with
  `<|endoftext|>` after each one.

"""


def _stories_head(config: dict[str, Any], corpus: dict[str, Any], build_info: dict[str, Any]) -> str:
    """Title, purpose and corpus section of the story model's card (the corpus is 100% synthetic)."""
    stories = corpus["stories"]
    return f"""# stories-gpt2 — Sentinel's bundled demo model (simple stories)

A small GPT-2 trained from scratch on short, simple children's stories, so that what head pruning does to a
model shows in text anyone can read: the base model writes plain, non-looping sentences, a damaged copy does not.
It is a demo, not a useful assistant.

## Corpus
- **100% synthetic**: {stories['train_documents']:,} train and {stories['validation_documents']:,} validation stories
  produced by `sentinel.demo.stories` (hand-written sentence templates: a character, a place, a wish, one of six
  problems, a helper and an ending; every choice drawn from a seeded `random.Random`, seed {stories['seed']}).
  No third-party text is in it, so it carries the project's own licence. The validation stories come from a
  separate random stream and never repeat a training story verbatim; being built from the same templates,
  they are far easier than real English (see the unseen-text perplexity below).
- Train: {corpus['train_chars']:,} characters, {build_info['train_tokens']:,} tokens; validation:
  {corpus['validation_chars']:,} characters, {build_info['validation_tokens']:,} tokens;
  SHA-256 of all stories joined by newlines `{stories['sha256'][:16]}…`.
- The exact text is bundled in `corpus/`: `train.jsonl.gz` and `validation.jsonl`, one JSON object
  `{{"text": story}}` per line. Documents are joined with `<|endoftext|>` after each one.

## What it cannot do
- It knows only the templates' world of about a thousand words: its perplexity on real English is enormous
  (unseen-text perplexity below, against a few hundred for stdlib-gpt2), and its validation perplexity is low
  because validation stories come from the same templates.
- Every training story starts after `<|endoftext|>`, and prompts are not given one: story openings ("Once upon a
  time, there was a …", "There was once a … called") work; prompts from the middle of a story often end after a
  few words.
- It often does not keep a name written in the prompt (it keeps the names it writes itself).

"""


def write_model_card(model_dir: str | Path, build_info: dict[str, Any], metrics: CardMetrics) -> Path:
    """Write README.md for the demo model from build_info.json and measured metrics; returns its path."""
    model_dir = Path(model_dir)
    config = build_info["config"]
    corpus = build_info["corpus"]
    params_note = ""
    weights = model_dir / "model.safetensors"
    if weights.is_file():
        params_note = f" ({weights.stat().st_size / 1e6:.1f} MB fp32 safetensors)"
    entropy_line = (
        f"- Normalised per-head attention entropy on validation text (H / log(visible keys), "
        f"{metrics.entropy_tokens:,} tokens, `sentinel.metrics.entropy.attention_entropy`): "
        f"min {_fmt(metrics.entropy_normalized_min)}, max {_fmt(metrics.entropy_normalized_max)}"
    )
    samples = "\n".join(
        f"{i}. **{s['prompt']}**{s['continuation']}".replace("\n", " ⏎ ") for i, s in enumerate(metrics.samples, 1)
    )
    evals = "\n".join(f"| {e['step']} | {e['validation_loss']:.4f} | {e['validation_perplexity']:.2f} |"
                      for e in build_info.get("eval_log", []))
    kind = config.get("corpus", "stdlib")
    head = _stories_head(config, corpus, build_info) if kind == "stories" else _stdlib_head(config, corpus, build_info)
    recipe = "stories-gpt2" if kind == "stories" else "stdlib-gpt2"
    quality_path = model_dir / QUALITY_FILE
    quality = ""
    if quality_path.is_file():
        quality = ("\n## Readability and what pruning does to it\n"
                   "`bench/demo_model_quality.py` (loop-freeness = distinct "
                   "word 4-grams / word 4-grams of each greedy 40-token continuation, averaged over 10 prompts; "
                   "corpus-bigram rate = share of the continuations' word bigrams found in the training corpus):\n\n"
                   + quality_path.read_text(encoding="utf-8"))
    text = head + f"""## Tokenizer
Byte-level BPE (`tokenizers`) trained on the train split, {metrics.vocab_size:,} tokens; `<|endoftext|>` is
bos and eos, `<|pad|>` (a separate token, never in the training data) is padding, so padding is never scored.

## Architecture
`GPT2LMHeadModel`: {config['n_layer']} layers × {config['n_head']} heads, d_model {config['n_embd']},
{config['n_positions']} positions, tied input/output embeddings, dropout {config['dropout']}{params_note}.

## Training
Seeded ({config['seed']}) AdamW (betas 0.9/0.95, weight decay {config['weight_decay']} on matrices), peak learning
rate {config['learning_rate']}, {config['warmup_steps']} warm-up steps then cosine decay to
{config['min_lr_ratio']}× peak, gradient clipping {config['grad_clip']}, batch {config['batch_size']} ×
{config['n_positions']} tokens (packed blocks, new random block offset and shuffle each epoch).
- Steps: {build_info['steps']:,}; tokens seen: {build_info['tokens_seen']:,}; final training loss
  {build_info['final_train_loss']:.4f}
- Training time: {build_info['training_seconds'] / 60:.1f} min on {build_info['machine']}
  (finished {build_info['finished_at']}; wall-clock time, so it includes any other load on the machine)

| step | validation loss | validation perplexity |
|---:|---:|---:|
{evals}

## Evaluation (validation split)
- Perplexity: **{metrics.validation_perplexity:.2f}** (mean NLL {metrics.validation_nll:.4f} nats over
  {metrics.validation_tokens_evaluated:,} predicted tokens, non-overlapping windows of {metrics.window_length};
  `sentinel.evaluation.perplexity.perplexity`)
- Unigram baseline on the same predicted tokens: **{metrics.unigram_perplexity:.2f}** (token frequencies from the
  {metrics.unigram_train_tokens:,} train tokens with add-one smoothing over all {metrics.vocab_size:,} vocabulary
  entries: p(t) = (count(t) + 1) / (N + V))
{entropy_line}

Greedy samples (at most {SAMPLE_NEW_TOKENS} new tokens, prompt in bold, ⏎ = newline):

{samples}

## Rebuild
`python -m sentinel.demo build --recipe {recipe} --out {build_info['out_dir']}` (same as
`sentinel build-demo-model --recipe {recipe}`; add `--device cuda` to train on a GPU); the card is
rewritten by `python -m sentinel.demo card --out {build_info['out_dir']}`. Figures are also in
`{CARD_METRICS_FILE}` and `{BUILD_INFO_FILE}`.
{quality}"""
    path = model_dir / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def finish_model_card(model_dir: str | Path, with_entropy: bool = True) -> CardMetrics:
    """Measure the built model, save card_metrics.json and write README.md."""
    model_dir = Path(model_dir)
    info_path = model_dir / BUILD_INFO_FILE
    if not info_path.is_file():
        raise DataError(f"{info_path} is missing; build the model with `python -m sentinel.demo build` first.")
    build_info = json.loads(info_path.read_text(encoding="utf-8"))
    metrics = compute_card_metrics(model_dir, with_entropy=with_entropy)
    (model_dir / CARD_METRICS_FILE).write_text(json.dumps(metrics.to_dict(), indent=2) + "\n", encoding="utf-8")
    path = write_model_card(model_dir, build_info, metrics)
    logger.info("Wrote %s: perplexity %.2f, unigram %.2f", path, metrics.validation_perplexity,
                metrics.unigram_perplexity)
    return metrics
