"""The story corpus generator, the stories recipe at toy size, the text measures and the recipe options."""

from __future__ import annotations

import argparse
import json

import pytest

from sentinel.demo import build
from sentinel.demo.build import DemoBuildConfig, build_demo_model, load_corpus_split
from sentinel.demo.prompts import PROMPTS, SAMPLE_COUNT, prompts_for
from sentinel.demo.quality import corpus_bigrams, four_gram_ratio, text_quality, word_bigrams
from sentinel.demo.stories import build_story_corpus
from sentinel.errors import DataError


def test_story_corpus_is_seeded_and_splits_do_not_overlap():
    first, again, other = build_story_corpus(200, 20, seed=0), build_story_corpus(200, 20, seed=0), \
        build_story_corpus(200, 20, seed=1)
    assert first.train == again.train and first.validation == again.validation and first.sha256 == again.sha256
    assert first.train != other.train
    assert not set(first.validation) & set(first.train)
    assert first.info["synthetic_share"] == 1.0 and first.info["train_documents"] == 200
    story = first.train[0]
    assert story.endswith(".") and len(story.split()) > 60 and "{" not in story


def test_recipe_options_override_only_what_is_given():
    parser = argparse.ArgumentParser()
    build.add_arguments(parser)
    stories = build.config_from_args(parser.parse_args(["--recipe", "stories-gpt2", "--max-steps", "7"]))
    assert stories.corpus == "stories" and stories.max_steps == 7
    assert stories.out_dir == build.RECIPES["stories-gpt2"].out_dir and stories.vocab_size == 2048
    default = build.config_from_args(parser.parse_args(["--device", "cpu", "--no-card"]))
    assert default == DemoBuildConfig(device="cpu", write_card=False)


def test_unknown_corpus_is_refused():
    with pytest.raises(DataError, match="stdlib"):
        build.load_splits(DemoBuildConfig(corpus="novels"))


def test_tiny_stories_build_writes_corpus_and_card(tmp_path):
    config = DemoBuildConfig(
        out_dir=str(tmp_path / "tiny"), corpus="stories", stories_train=120, stories_validation=12, vocab_size=400,
        n_layer=1, n_head=2, n_embd=16, n_positions=64, batch_size=2, max_steps=2, warmup_steps=1, eval_every=2,
        log_every=1,
    )
    result = build_demo_model(config)
    assert result.steps == 2 and result.corpus["stories"]["train_documents"] == 120
    out = tmp_path / "tiny"
    assert load_corpus_split(out, "train") == build_story_corpus(120, 12, seed=0).train
    card = (out / "README.md").read_text()
    metrics = json.loads((out / "card_metrics.json").read_text())
    assert "100% synthetic" in card and "--recipe stories-gpt2" in card
    assert [s["prompt"] for s in metrics["samples"]] == list(PROMPTS["stories-gpt2"][:3])


def test_four_gram_ratio_and_bigram_rate_by_hand():
    assert four_gram_ratio("a b c d a b c d") == pytest.approx(4 / 5)
    assert four_gram_ratio("one two three four five") == 1.0
    assert four_gram_ratio("too short here") is None
    assert word_bigrams("The cat, the DOG.") == [("the", "cat"), ("cat", "the"), ("the", "dog")]
    known = corpus_bigrams(["the cat sat", "a dog ran"])
    quality = text_quality(["the cat ran away", "x y"], known)
    # bigrams: the-cat (known), cat-ran, ran-away, x-y -> 1/4; 4-grams: only the first text has one
    assert quality.corpus_bigram_rate == pytest.approx(1 / 4)
    assert quality.loop_freeness == 1.0 and quality.scored_for_loops == 1
    with pytest.raises(DataError):
        text_quality(["a b"], known)


def test_every_bundled_model_has_ten_prompts():
    assert all(len(p) == 10 and len(set(p)) == 10 for p in PROMPTS.values())
    assert SAMPLE_COUNT <= 10 and prompts_for("someone-else") == PROMPTS["stories-gpt2"]


def test_bundled_stories_corpus_is_what_the_recipe_generates():
    from pathlib import Path

    recipe = build.RECIPES["stories-gpt2"]
    folder = Path(__file__).resolve().parents[2] / recipe.out_dir
    corpus = build_story_corpus(recipe.stories_train, recipe.stories_validation, recipe.seed)
    assert load_corpus_split(folder, "train") == corpus.train
    assert load_corpus_split(folder, "validation") == corpus.validation
    manifest = json.loads((folder / "corpus" / "manifest.json").read_text())
    assert manifest["stories"]["sha256"] == corpus.sha256
