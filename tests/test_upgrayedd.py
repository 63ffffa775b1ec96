"""Plasticity cycles: measure -> prune -> fine-tune -> grow, end to end, recorded per cycle."""

from __future__ import annotations

import math

import pytest

from sentinel.data import TextBlocks, cut_blocks, join_documents
from sentinel.pruning import active_heads
from sentinel.pruning.growth import growing_heads
from sentinel.store import Store
from sentinel.upgrayedd import UpgrayeddPipeline, UpgrayeddResult
from tests.conftest import TINY_TEXTS, make_tiny_lm


def tiny_loader(tokenizer, batch_size: int = 4):
    blocks = cut_blocks(join_documents(tokenizer, TINY_TEXTS * 3), 32)
    return TextBlocks(blocks, 32, "tiny", len(TINY_TEXTS), tokenizer.pad_token_id).dataloader(batch_size=batch_size)


def test_two_plasticity_cycles_run_end_to_end_and_are_recorded(tmp_path):
    model, tokenizer = make_tiny_lm()           # 2 layers x 4 heads
    store = Store(tmp_path / "s.db")
    pipeline = UpgrayeddPipeline(model, tokenizer, "entropy", "cpu", pruning_ratio=0.25, growth_ratio=0.5,
                                 learning_rate=5e-3, store=store)
    result = pipeline.run_optimization(tiny_loader(tokenizer), num_cycles=2, epochs_per_cycle=0.5)
    assert [c.cycle for c in result.cycles] == [1, 2]
    assert result.baseline_active_heads == 8
    first, second = result.cycles
    assert sum(map(len, first.pruned.values())) == 2          # round(0.25 x 8)
    assert sum(map(len, first.grown.values())) == 1           # round(0.5 x 2)
    assert first.active_heads == 8 - 2 + 1
    assert sum(map(len, second.pruned.values())) == 2          # round(0.25 x 7) = 2
    assert second.active_heads == 7 - 2 + 1
    assert second.active_heads == sum(map(len, active_heads(model).values()))
    assert all(math.isfinite(c.perplexity) and c.steps > 0 for c in result.cycles)
    assert first.parameters == result.baseline_parameters      # masking keeps the weights
    assert UpgrayeddResult.from_dict(result.to_dict()) == result
    curves = store.get_curves(result.experiment_id)
    assert [p.step for p in curves["active_heads"]] == [0, 1, 2]
    assert [p.value for p in curves["active_heads"]] == [8, 7, 6]
    assert store.get_experiment(result.experiment_id).status == "done"
    stages = {(r["stage"], r["mode"]) for r in store.get_pruned_heads(result.experiment_id)}
    assert stages == {("cycle 1", "mask"), ("cycle 1", "grow"), ("cycle 2", "mask"), ("cycle 2", "grow")}


def test_removal_cycles_shrink_the_model_and_regrow_weights():
    model, tokenizer = make_tiny_lm()
    pipeline = UpgrayeddPipeline(model, tokenizer, "magnitude", "cpu", pruning_ratio=0.5, growth_ratio=0.5,
                                 mode="remove", learning_rate=5e-3)
    result = pipeline.run_optimization(tiny_loader(tokenizer), num_cycles=1, epochs_per_cycle=0.5)
    cycle = result.cycles[0]
    assert sum(map(len, cycle.pruned.values())) == 4 and sum(map(len, cycle.grown.values())) == 2
    assert cycle.parameters < result.baseline_parameters       # 2 heads' slices are gone for good
    assert len(growing_heads(model)) == 2                        # the regrown pair is still fading in


def test_bad_settings_are_refused():
    model, tokenizer = make_tiny_lm()
    with pytest.raises(Exception, match="mode"):
        UpgrayeddPipeline(model, tokenizer, "magnitude", "cpu", mode="shrink")
    with pytest.raises(Exception, match="num_cycles"):
        UpgrayeddPipeline(model, tokenizer, "magnitude", "cpu").run_optimization(tiny_loader(tokenizer), 0)
