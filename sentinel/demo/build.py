"""Build a bundled demo model: a byte-level BPE tokenizer and a small GPT-2, trained on stdlib docstrings
(`stdlib-gpt2`) or on seeded simple stories (`stories-gpt2`); `--recipe` picks which one.

This is the asset build script (a compact, seeded AdamW loop), not the product fine-tuner.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from sentinel.data import cut_blocks, join_documents
from sentinel.demo.config import (  # noqa: F401  (re-exported)
    DEFAULT_RECIPE, RECIPES, DemoBuildConfig, add_arguments, config_from_args,
)
from sentinel.demo.corpus import CorpusSplits, build_corpus
from sentinel.device import pick_device
from sentinel.errors import DataError
from sentinel.files import mark_folder, replace_folder_atomically
from sentinel.evaluation.perplexity import perplexity

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
BUILD_INFO_FILE = "build_info.json"
CORPUS_DIR = "corpus"
TRAIN_FILE = "train.jsonl.gz"
VALIDATION_FILE = "validation.jsonl"
SAMPLE_PROMPTS = ("Return the", "This module provides", "Create a new")


@dataclass
class DemoBuildResult:
    """What the build produced and measured; saved as build_info.json next to the weights."""

    out_dir: str
    config: dict[str, Any]
    steps: int
    tokens_seen: int
    train_tokens: int
    validation_tokens: int
    training_seconds: float
    final_train_loss: float
    machine: str
    finished_at: str
    corpus: dict[str, Any] = field(default_factory=dict)
    loss_log: list[dict[str, float]] = field(default_factory=list)
    eval_log: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for build_info.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoBuildResult:
        """Inverse of `to_dict`."""
        return cls(**data)




def load_splits(config: DemoBuildConfig) -> CorpusSplits:
    """The train/validation documents the config asks for (stdlib docstrings or seeded stories)."""
    if config.corpus == "stdlib":
        return build_corpus(config.stdlib_dir, config.validation_fraction, config.max_files)
    if config.corpus == "stories":
        from sentinel.demo.stories import build_story_corpus

        stories = build_story_corpus(config.stories_train, config.stories_validation, config.seed)
        return CorpusSplits(train=stories.train, validation=stories.validation, stories=stories.info | {
            "sha256": stories.sha256})
    raise DataError(f"Unknown demo corpus {config.corpus!r}; use 'stdlib' or 'stories'.")


def describe_machine(device: torch.device) -> str:
    """One line naming the hardware the build ran on."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"CPU {platform.machine()} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads), "
            f"{platform.system()}, torch {torch.__version__}")


def train_tokenizer(texts: list[str], vocab_size: int, model_max_length: int) -> Any:
    """Byte-level BPE trained on `texts`, wrapped as a PreTrainedTokenizerFast (eos=bos=<|endoftext|>, pad=<|pad|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    # A separate pad token: masking padding by id can never hide a real end-of-text token.
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
    )


def make_model(config: DemoBuildConfig, tokenizer: Any) -> torch.nn.Module:
    """A freshly initialised GPT-2 with tied embeddings sized by the config and the tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt_config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout, embd_pdrop=config.dropout,
        attn_pdrop=config.dropout, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(gpt_config)


def learning_rate_at(step: int, config: DemoBuildConfig) -> float:
    """Linear warm-up then cosine decay to min_lr_ratio × learning_rate."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.learning_rate * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def _optimizer(model: torch.nn.Module, config: DemoBuildConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not biases, LayerNorms)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95), eps=1e-8)


def save_corpus(splits: CorpusSplits, out_dir: Path) -> None:
    """Write the splits as JSON lines ({"text": doc}); train gzipped with mtime 0 so the bytes are reproducible."""
    corpus_dir = out_dir / CORPUS_DIR
    corpus_dir.mkdir(parents=True, exist_ok=True)
    with open(corpus_dir / TRAIN_FILE, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                                   filename="") as gz:
        for doc in splits.train:
            gz.write((json.dumps({"text": doc}, ensure_ascii=False) + "\n").encode("utf-8"))
    with open(corpus_dir / VALIDATION_FILE, "w", encoding="utf-8") as handle:
        for doc in splits.validation:
            handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    (corpus_dir / "manifest.json").write_text(json.dumps(splits.to_dict(), indent=2) + "\n", encoding="utf-8")


def load_corpus_split(model_dir: str | Path, split: str) -> list[str]:
    """Documents of the saved 'train' or 'validation' split of a demo model folder."""
    names = {"train": TRAIN_FILE, "validation": VALIDATION_FILE}
    if split not in names:
        raise DataError(f"Unknown corpus split {split!r}; use 'train' or 'validation'.")
    path = Path(model_dir) / CORPUS_DIR / names[split]
    if not path.is_file():
        raise DataError(f"Corpus file {path} is missing; rebuild the demo model with `python -m sentinel.demo build`.")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def build_demo_model(config: DemoBuildConfig, write_to: str | Path | None = None) -> DemoBuildResult:
    """Build corpus, tokenizer and model, train with a seeded loop, save everything under `config.out_dir`
    (or into `write_to`, a staging folder that `run` then swaps into `config.out_dir` atomically)."""
    torch.manual_seed(config.seed)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    device = pick_device(config.device)
    out_dir = Path(write_to if write_to is not None else config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    splits = load_splits(config)
    tokenizer = train_tokenizer(splits.train, config.vocab_size, config.n_positions)
    train_ids = join_documents(tokenizer, splits.train)
    validation_ids = join_documents(tokenizer, splits.validation)
    block = config.n_positions
    if len(train_ids) < block * config.batch_size:
        raise DataError(f"Only {len(train_ids)} training tokens for blocks of {block} × batch {config.batch_size}; "
                        "use more files or a smaller n_positions/batch_size.")
    logger.info("Tokens: %d train, %d validation; vocab %d; device %s", len(train_ids), len(validation_ids),
                len(tokenizer), device)

    model = make_model(config, tokenizer).to(device)
    optimizer = _optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    loss_log: list[dict[str, float]] = []
    eval_log: list[dict[str, float]] = []
    order: list[int] = []
    blocks: list[list[int]] = []
    step, tokens_seen, last_loss = 0, 0, float("nan")
    start = time.perf_counter()
    model.train()
    while step < config.max_steps:
        if len(order) < config.batch_size:
            # New epoch: a fresh random block boundary offset and a fresh shuffle, both from the seeded generator.
            offset = int(torch.randint(0, block, (1,), generator=generator))
            blocks = cut_blocks(train_ids, block, offset)
            order = torch.randperm(len(blocks), generator=generator).tolist()
        batch_index, order = order[:config.batch_size], order[config.batch_size:]
        input_ids = torch.tensor([blocks[i] for i in batch_index], dtype=torch.long, device=device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        loss = model(input_ids=input_ids, labels=input_ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        tokens_seen += input_ids.numel()
        last_loss = float(loss.detach())
        if not math.isfinite(last_loss):
            raise DataError(f"Training loss became {last_loss} at step {step}; lower the learning rate.")
        if step % config.log_every == 0 or step == config.max_steps:
            elapsed = time.perf_counter() - start
            loss_log.append({"step": step, "loss": round(last_loss, 4), "lr": learning_rate_at(step - 1, config),
                             "seconds": round(elapsed, 1)})
            logger.info("step %d/%d loss %.4f lr %.2e %.0f tok/s", step, config.max_steps, last_loss,
                        learning_rate_at(step - 1, config), tokens_seen / elapsed)
        if step % config.eval_every == 0 or step == config.max_steps:
            result = perplexity(model, tokenizer, validation_ids, seq_len=block, batch_size=16)
            model.train()
            eval_log.append({"step": step, "validation_loss": round(result.nll, 4),
                             "validation_perplexity": round(result.perplexity, 3)})
            logger.info("step %d validation loss %.4f perplexity %.2f", step, result.nll, result.perplexity)
    training_seconds = time.perf_counter() - start

    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    save_corpus(splits, out_dir)
    result = DemoBuildResult(
        out_dir=str(Path(config.out_dir)), config=config.to_dict(), steps=step, tokens_seen=tokens_seen,
        train_tokens=len(train_ids), validation_tokens=len(validation_ids), training_seconds=round(training_seconds, 1),
        final_train_loss=round(last_loss, 4), machine=describe_machine(device),
        finished_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), corpus=splits.to_dict(),
        loss_log=loss_log, eval_log=eval_log,
    )
    (out_dir / BUILD_INFO_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    logger.info("Saved demo model to %s after %d steps (%.0f s)", out_dir, step, training_seconds)
    if config.write_card:
        from sentinel.demo.card import finish_model_card

        finish_model_card(out_dir)
    if write_to is None:
        mark_folder(out_dir, "model")   # so a later build (or save) may replace it, and nothing else may
    return result


def run(args: argparse.Namespace) -> int:
    """Build the demo model from parsed arguments; returns the exit code."""
    config = config_from_args(args)
    # Written aside and swapped in: a crash mid-build (or mid-card) leaves the previous model whole.
    replace_folder_atomically(config.out_dir, lambda staging: build_demo_model(config, write_to=staging))
    return 0
