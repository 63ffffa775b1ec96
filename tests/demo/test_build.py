"""The demo build recipe end to end at toy size, so it cannot rot."""

from __future__ import annotations

import json

import pytest

from transformers import AutoModelForCausalLM, AutoTokenizer

from sentinel.demo.build import DemoBuildConfig, build_demo_model, learning_rate_at, load_corpus_split
from sentinel.demo.card import scored_targets, unigram_perplexity


def test_tiny_build_end_to_end(tmp_path):
    config = DemoBuildConfig(
        out_dir=str(tmp_path / "tiny"), vocab_size=300, n_layer=2, n_head=2, n_embd=32, n_positions=32,
        batch_size=4, max_steps=4, warmup_steps=2, eval_every=2, log_every=1, max_files=60,
        validation_fraction=0.2, write_card=True,
    )
    result = build_demo_model(config)
    assert result.steps == 4 and result.tokens_seen == 4 * 4 * 32
    assert all(entry["loss"] > 0 for entry in result.loss_log)
    assert [e["step"] for e in result.eval_log] == [2, 4]
    out = tmp_path / "tiny"
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin")), "weights must be safetensors only"
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.n_layer == 2 and model.config.vocab_size == len(tokenizer)
    assert load_corpus_split(out, "validation") and load_corpus_split(out, "train")
    info = json.loads((out / "build_info.json").read_text())
    assert info["steps"] == 4
    metrics = json.loads((out / "card_metrics.json").read_text())
    card = (out / "README.md").read_text()
    assert f"{metrics['validation_perplexity']:.2f}" in card and f"{metrics['unigram_perplexity']:.2f}" in card
    assert f"{metrics['validation_perplexity']:.2f}" == f"{result.eval_log[-1]['validation_perplexity']:.2f}"
    assert 0 <= metrics["entropy_normalized_min"] <= metrics["entropy_normalized_max"] <= 1
    assert len(metrics["samples"]) == 3


def test_unigram_baseline_by_hand():
    # train counts: a=2, b=1; V=3 -> p(a)=3/6, p(b)=2/6, p(c)=1/6
    import math

    assert unigram_perplexity([0, 0, 1], [0, 2], 3) == pytest.approx(math.exp(-(math.log(3 / 6) + math.log(1 / 6)) / 2))
    assert scored_targets([5, 6, 7, 8, 9], 2) == [6, 8]


def test_learning_rate_schedule_warms_up_then_decays():
    config = DemoBuildConfig(learning_rate=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert learning_rate_at(0, config) == 0.1
    assert learning_rate_at(9, config) == 1.0
    assert abs(learning_rate_at(10, config) - 1.0) < 1e-9
    assert abs(learning_rate_at(110, config) - 0.1) < 1e-9
