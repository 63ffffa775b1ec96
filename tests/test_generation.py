"""Generation: seeded sampling is repeatable and scoped; greedy equals argmax decoding by hand."""

from __future__ import annotations

import pytest
import torch

from sentinel.errors import DataError
from sentinel.generation import GenerationSettings, compare_generations, generate_text
from sentinel.pruning.text_generator import generate_text as documented_generate_text


def test_same_seed_same_text_and_global_rng_untouched(tiny_lm):
    model, tokenizer = tiny_lm
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = generate_text(model, tokenizer, "Return the", max_new_tokens=12, seed=7, temperature=1.5, top_k=0)
    after = torch.rand(1)
    second = documented_generate_text(model, tokenizer, "Return the", max_new_tokens=12, seed=7, temperature=1.5,
                                      top_k=0)
    assert first.text == second.text and first.new_tokens == 12
    assert torch.equal(after, expected_next), "generation must not move the caller's random state"
    others = {generate_text(model, tokenizer, "Return the", max_new_tokens=12, seed=s, temperature=1.5,
                            top_k=0).text for s in range(5)}
    assert len(others) > 1


def test_greedy_equals_argmax_by_hand(tiny_lm):
    model, tokenizer = tiny_lm
    prompt = "Create a new"
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    result = generate_text(model, tokenizer, prompt, max_new_tokens=6, greedy=True)
    assert result.text == tokenizer.decode(ids[prompt_len:], skip_special_tokens=True)
    assert result.prompt == prompt and result.tokens_per_s > 0


def test_compare_uses_identical_settings(tiny_lm):
    model, tokenizer = tiny_lm
    settings = GenerationSettings(max_new_tokens=5, seed=3)
    results = compare_generations({"a": model, "b": model}, tokenizer, "Return", settings)
    assert [r.label for r in results] == ["a", "b"]
    assert results[0].text == results[1].text and results[0].settings == results[1].settings


def test_bad_settings(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(DataError, match="temperature"):
        generate_text(model, tokenizer, "x", temperature=0)
    with pytest.raises(DataError, match="positions"):
        generate_text(model, tokenizer, "x", max_new_tokens=500)
    assert generate_text(model, tokenizer, "", max_new_tokens=3, greedy=True).new_tokens >= 1
