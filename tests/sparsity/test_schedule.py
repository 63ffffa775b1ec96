"""Zeros survive fine-tuning (with and without distillation) and save -> load; gradual and lottery schedules."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from sentinel.data import cut_blocks, join_documents
from sentinel.models import save_model
from sentinel.sparsity import SparsityConfig, SparsityError, find_targets, make_permanent, sparsify
from sentinel.sparsity.schedule import (
    GradualSchedule, LotteryConfig, cubic_sparsity, finetune_sparse, lottery_ticket, snapshot, start_gradual,
)
from sentinel.training.config import FineTuneConfig
from sentinel.training.finetune import FineTuneData
from tests.conftest import TINY_TEXTS, make_char_tokenizer, make_tiny_lm, make_tiny_model


@pytest.fixture
def lm_and_data():
    model, tokenizer = make_tiny_lm()
    blocks = cut_blocks(join_documents(tokenizer, TINY_TEXTS * 3), 16)
    return model, tokenizer, FineTuneData(blocks, blocks[:2], 16, "tiny")


# a large learning rate and weight decay: anything not held at zero would move visibly
CONFIG = FineTuneConfig(max_steps=4, learning_rate=1e-2, batch_size=4, block_size=16, eval_every=0,
                        eval_max_tokens=32, weight_decay=0.1, warmup_ratio=0.0, device="cpu")


@pytest.mark.parametrize("distill", [False, True])
def test_zeros_stay_zero_through_finetuning_and_save_load(lm_and_data, tmp_path, distill):
    model, tokenizer, data = lm_and_data
    teacher = copy.deepcopy(model) if distill else None
    sparsify(model, SparsityConfig("l1", 0.5))
    zeros = {t.name: (t.weight() == 0).clone() for t in find_targets(model)}
    before = {t.name: t.weight().clone() for t in find_targets(model)}
    finetune_sparse(model, tokenizer, data, FineTuneConfig(**{**CONFIG.to_dict(), "distill": distill}),
                    teacher=teacher)
    for t in find_targets(model):
        assert torch.equal(t.weight() == 0, zeros[t.name]), t.name
        assert (t.module.weight_orig[t.module.weight_mask == 0] == 0).all()     # zero in the parameter too
        assert not torch.equal(t.weight(), before[t.name])                       # it did train
    make_permanent(model)
    folder = save_model(model, tokenizer, tmp_path / "sparse")
    plain = transformers.AutoModelForCausalLM.from_pretrained(folder)            # an ordinary checkpoint
    for t_plain, t in zip(find_targets(plain), find_targets(model)):
        assert torch.equal(t_plain.weight() == 0, zeros[t.name])
        assert torch.equal(t_plain.weight(), t.weight())


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_zeros_stay_zero_in_linear_families(family):
    model, tokenizer = make_tiny_model(family), make_char_tokenizer()
    blocks = cut_blocks(join_documents(tokenizer, TINY_TEXTS * 3), 16)
    sparsify(model, SparsityConfig("l1", pattern="2:4"))
    zeros = {t.name: (t.weight() == 0).clone() for t in find_targets(model)}
    finetune_sparse(model, tokenizer, FineTuneData(blocks, blocks[:2], 16, "tiny"), CONFIG)
    make_permanent(model)
    for t in find_targets(model):
        assert torch.equal(t.module.weight == 0, zeros[t.name]), t.name


def test_cubic_schedule_formula():
    assert cubic_sparsity(0, 0.0, 0.8, 0, 10) == 0.0
    assert cubic_sparsity(5, 0.0, 0.8, 0, 10) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)
    assert cubic_sparsity(10, 0.0, 0.8, 0, 10) == 0.8
    assert cubic_sparsity(99, 0.1, 0.8, 2, 10) == 0.8


def test_gradual_schedule_hits_its_sparsity_at_every_update_step(lm_and_data):
    model, tokenizer, data = lm_and_data
    schedule = GradualSchedule(initial=0.1, final=0.7, start=0, end=6, every=2)
    callback = start_gradual(model, schedule)
    seen: dict[int, dict[str, int]] = {}
    callback.on_step = lambda step: seen.update({step: {t.name: int((t.weight() == 0).sum())
                                                        for t in find_targets(model)}})
    finetune_sparse(model, tokenizer, data, FineTuneConfig(**{**CONFIG.to_dict(), "max_steps": 6}), callback=callback)
    assert [step for step, _, _ in callback.history] == [0, 2, 4, 6]
    for step in (2, 4, 6):
        target = schedule.sparsity_at(step)
        for t in find_targets(model):
            assert seen[step][t.name] == round(target * t.weight().numel()), (step, t.name)
    assert callback.history[-1][2] == pytest.approx(0.7, abs=1e-3)
    # between updates sparsity holds: step 3 has step 2's zeros
    assert seen[3] == seen[2]


def test_gradual_rejects_data_methods_and_bad_steps():
    with pytest.raises(SparsityError, match="one-shot"):
        GradualSchedule(method="snip").validate()
    with pytest.raises(SparsityError, match="start < end"):
        GradualSchedule(start=5, end=5).validate()


def test_lottery_round_rewinds_survivors_exactly(lm_and_data):
    model, tokenizer, data = lm_and_data
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    checks = []

    def on_round(entry):
        values = snapshot(model)
        for t in find_targets(model):
            mask = t.module.weight_mask
            original = initial[f"{t.name}.weight"]
            assert torch.equal(values[f"{t.name}.weight_orig"], original * mask)    # survivors exactly as at step 0
        checks.append(entry.sparsity)

    result = lottery_ticket(model, tokenizer, data, CONFIG, LotteryConfig(rounds=2, rate=0.3, steps=2),
                            on_round=on_round)
    assert checks == [r.sparsity for r in result.rounds]
    assert result.rounds[0].sparsity == pytest.approx(0.3, abs=1e-4)
    assert result.rounds[1].sparsity == pytest.approx(1 - 0.7 ** 2, abs=1e-4)
    assert result.final_perplexity is not None
