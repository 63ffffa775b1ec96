"""Speed measurement works on unpruned, masked and physically pruned models alike."""

from __future__ import annotations

from sentinel import mask_heads, remove_heads
from sentinel.evaluation.speed import measure_speed, parameter_count


def test_speed_on_unpruned_masked_and_removed(tiny_lm):
    model, tokenizer = tiny_lm
    full = measure_speed(model, tokenizer, prompt_tokens=8, new_tokens=4, runs=2)
    assert full.prefill_tokens_per_s > 0 and full.decode_tokens_per_s > 0
    assert full.params == parameter_count(model) and full.weight_bytes == 4 * full.params
    mask_heads(model, {0: [1]})
    masked = measure_speed(model, tokenizer, prompt_tokens=8, new_tokens=4, runs=2)
    assert masked.params == full.params
    remove_heads(model, {1: [0, 2]})
    removed = measure_speed(model, tokenizer, prompt_tokens=8, new_tokens=4, runs=2)
    assert removed.params < full.params and removed.decode_tokens_per_s > 0
    assert removed.to_dict()["new_tokens"] == 4
