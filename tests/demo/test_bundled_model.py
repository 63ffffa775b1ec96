"""The bundled demo model: loads offline, generates repeatably, and beats the unigram baseline by far."""

from __future__ import annotations

import json
import math

import pytest

from sentinel import load_model
from sentinel.data import join_documents, load_bundled_texts, load_text_blocks
from sentinel.demo.card import CARD_METRICS_FILE, scored_targets, unigram_perplexity
from sentinel.evaluation.perplexity import perplexity
from sentinel.generation import generate_text
from sentinel.models import BUNDLED_MODEL_DIR


@pytest.fixture(scope="module")
def bundled():
    import transformers

    transformers.GPT2LMHeadModel  # import the lazy modeling module first: the bound below is for loading, not imports
    return load_model(None, device="cpu")


@pytest.fixture(scope="module")
def card_metrics():
    return json.loads((BUNDLED_MODEL_DIR / CARD_METRICS_FILE).read_text())


def test_loads_offline_quickly_with_the_documented_shape(bundled):
    assert bundled.load_seconds <= 5.0
    assert (bundled.layout.num_layers, bundled.layout.num_heads) == (6, 8)
    assert (BUNDLED_MODEL_DIR / "model.safetensors").stat().st_size <= 30 * 1024 * 1024
    assert not list(BUNDLED_MODEL_DIR.glob("*.bin"))
    assert bundled.tokenizer.pad_token_id != bundled.tokenizer.eos_token_id


def test_sampling_is_deterministic_under_a_seed(bundled):
    runs = [generate_text(bundled.model, bundled.tokenizer, "Return the", max_new_tokens=20, seed=11).text
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].strip()


def test_validation_perplexity_matches_card_and_beats_unigram(bundled, card_metrics):
    tokenizer = bundled.tokenizer
    seq_len = bundled.model.config.n_positions
    blocks = load_text_blocks(tokenizer, None, block_size=seq_len)
    result = perplexity(bundled.model, tokenizer, blocks.input_ids, seq_len=seq_len, batch_size=16)
    assert math.isfinite(result.perplexity)
    assert result.tokens_evaluated == card_metrics["validation_tokens_evaluated"]
    assert result.perplexity == pytest.approx(card_metrics["validation_perplexity"], rel=1e-3)
    train_ids = join_documents(tokenizer, load_bundled_texts("train"))
    unigram = unigram_perplexity(train_ids, scored_targets(blocks.stream(), seq_len), len(tokenizer))
    assert unigram == pytest.approx(card_metrics["unigram_perplexity"], rel=1e-9)
    assert result.perplexity <= unigram / 2
    card = (BUNDLED_MODEL_DIR / "README.md").read_text()
    assert f"{card_metrics['validation_perplexity']:.2f}" in card and f"{unigram:.2f}" in card
