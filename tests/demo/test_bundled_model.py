"""The bundled demo models, each named explicitly: they load offline, generate repeatably, match their cards and
beat the unigram baseline by far. `load_model(None)` opens on the one named by BUNDLED_MODEL_DIR."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sentinel import load_model
from sentinel.data import join_documents
from sentinel.demo.build import load_corpus_split
from sentinel.demo.card import CARD_METRICS_FILE, card_prompts, scored_targets, unigram_perplexity
from sentinel.demo.prompts import prompts_for
from sentinel.evaluation.perplexity import perplexity
from sentinel.generation import generate_text
from sentinel.models import BUNDLED_MODEL_DIR

MODELS_DIR = Path(__file__).resolve().parents[2] / "assets" / "models"
NAMES = ("stdlib-gpt2", "stories-gpt2")


@pytest.fixture(scope="module", params=NAMES)
def bundled(request):
    import transformers

    transformers.GPT2LMHeadModel  # import the lazy modeling module first: the bound below is for loading, not imports
    folder = MODELS_DIR / request.param
    return folder, load_model(str(folder), device="cpu")


def test_the_default_model_is_one_of_the_bundled_models():
    assert BUNDLED_MODEL_DIR.name in NAMES and (BUNDLED_MODEL_DIR / "config.json").is_file()


def test_loads_offline_quickly_with_the_documented_shape(bundled):
    folder, loaded = bundled
    assert loaded.load_seconds <= 5.0
    assert (loaded.layout.num_layers, loaded.layout.num_heads) == (6, 8)
    assert (folder / "model.safetensors").stat().st_size <= 30 * 1024 * 1024
    assert not list(folder.glob("*.bin"))
    assert loaded.tokenizer.pad_token_id != loaded.tokenizer.eos_token_id


def test_sampling_is_deterministic_under_a_seed(bundled):
    folder, loaded = bundled
    prompt = prompts_for(folder.name)[0]
    runs = [generate_text(loaded.model, loaded.tokenizer, prompt, max_new_tokens=20, seed=11).text for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].strip()


def test_validation_perplexity_matches_card_and_beats_unigram(bundled):
    folder, loaded = bundled
    card_metrics = json.loads((folder / CARD_METRICS_FILE).read_text())
    tokenizer = loaded.tokenizer
    seq_len = loaded.model.config.n_positions
    ids = join_documents(tokenizer, load_corpus_split(folder, "validation"))
    result = perplexity(loaded.model, tokenizer, ids, seq_len=seq_len, batch_size=16)
    assert math.isfinite(result.perplexity)
    assert result.tokens_evaluated == card_metrics["validation_tokens_evaluated"]
    assert result.perplexity == pytest.approx(card_metrics["validation_perplexity"], rel=1e-3)
    train_ids = join_documents(tokenizer, load_corpus_split(folder, "train"))
    unigram = unigram_perplexity(train_ids, scored_targets(ids, seq_len), len(tokenizer))
    assert unigram == pytest.approx(card_metrics["unigram_perplexity"], rel=1e-9)
    assert result.perplexity <= unigram / 2
    card = (folder / "README.md").read_text()
    assert f"{card_metrics['validation_perplexity']:.2f}" in card and f"{unigram:.2f}" in card
    assert [s["prompt"] for s in card_metrics["samples"]] == list(card_prompts(folder))


def test_card_samples_regenerate_exactly(bundled):
    folder, loaded = bundled
    sample = json.loads((folder / CARD_METRICS_FILE).read_text())["samples"][0]
    again = generate_text(loaded.model, loaded.tokenizer, sample["prompt"], max_new_tokens=sample["new_tokens"],
                          greedy=True)
    assert again.text == sample["continuation"]
