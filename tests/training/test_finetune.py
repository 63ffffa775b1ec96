"""Fine-tuning: loss goes down, masks and removals hold, distillation is the documented mix, schedules resume."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sentinel.data import cut_blocks, join_documents, load_texts
from sentinel.models import load_model, model_heads
from sentinel.pruning import mask_heads, present_heads, remove_heads
from sentinel.training import (DistillationTrainer, FineTuneConfig, FineTuneData, FineTuneResult,
                               TrainingConfigError, distillation_loss, finetune)
from sentinel.training.trainer import TokenBlocks
from tests.conftest import make_char_tokenizer, make_tiny_lm, make_tiny_model
from tests.training.helpers import tiny_config, tiny_data


def mean_loss(model, blocks: list[list[int]]) -> float:
    ids = torch.tensor(blocks)
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def test_a_few_steps_lower_the_training_loss():
    model, tokenizer = make_tiny_lm()
    data = tiny_data(tokenizer)
    data.train = data.train[:4]                        # one fixed batch, seen every step
    before = mean_loss(model, data.train)
    result = finetune(model, tokenizer, data, tiny_config(max_steps=4))
    assert result.stopped == "completed" and result.steps == 4
    assert mean_loss(model, data.train) < before - 0.1
    assert [s for s, _ in result.losses] == [1, 2, 3, 4]
    assert result.perplexity_after < result.perplexity_before
    assert not model.training


def test_a_few_steps_lower_the_training_loss_on_the_bundled_model():
    loaded = load_model(None, device="cpu")
    ids = join_documents(loaded.tokenizer, load_texts("bundled:validation")[:40])
    blocks = cut_blocks(ids, 64)
    data = FineTuneData(blocks[:4], blocks[4:6], 64, "bundled:validation")
    before = mean_loss(loaded.model, data.train)
    finetune(loaded.model, loaded.tokenizer, data, tiny_config(max_steps=3, block_size=64, learning_rate=1e-3,
                                                               eval_max_tokens=128))
    assert mean_loss(loaded.model, data.train) < before


def head_output_probe(model, layer: int):
    """Record what reaches the output projection of `layer` (after the gate) on every forward."""
    proj = model_heads(model).adapter.output_projection(model_heads(model).modules[layer])
    seen: list[torch.Tensor] = []
    handle = proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen, handle


def test_masked_heads_keep_their_weights_and_zero_output_and_removed_heads_stay_removed():
    model, tokenizer = make_tiny_lm()
    mask_heads(model, {0: [1]})
    remove_heads(model, {1: [2]})
    heads = model_heads(model)
    frozen = {name: view.detach().clone() for name, view in vars(heads.head_weights(0, 1)).items()}
    active_q = heads.head_weights(0, 0).q.detach().clone()
    shapes = {name: p.shape for name, p in model.named_parameters()}
    # weight decay would shrink the masked slices if the guard did not restore them
    finetune(model, tokenizer, tiny_data(tokenizer), tiny_config(weight_decay=0.5))
    after = model_heads(model).head_weights(0, 1)
    for name, value in frozen.items():
        assert torch.equal(getattr(after, name), value), name
    assert not torch.equal(model_heads(model).head_weights(0, 0).q, active_q)    # training did move the rest
    assert present_heads(model) == {0: [0, 1, 2, 3], 1: [0, 1, 3]}
    assert {name: p.shape for name, p in model.named_parameters()} == shapes
    seen, handle = head_output_probe(model, 0)
    model(input_ids=torch.tensor(tiny_data(tokenizer).train[:2]))
    handle.remove()
    d = model.config.n_embd // model.config.n_head
    assert seen[0][..., d:2 * d].abs().max() == 0          # head 1's output reaches nothing
    assert seen[0][..., :d].abs().max() > 0


def test_grouped_query_masks_freeze_q_and_o_and_whole_groups_freeze_k_and_v():
    model = make_tiny_model("llama")                        # 8 query heads share 2 K/V heads (groups of 4)
    tokenizer = make_char_tokenizer()
    mask_heads(model, {0: [0], 1: [4, 5, 6, 7]})
    heads = model_heads(model)
    lone, group = heads.head_weights(0, 0), heads.head_weights(1, 4)
    before = {"q": lone.q.clone(), "o": lone.o.clone(), "k_shared": lone.k.clone(),
              "gk": group.k.clone(), "gv": group.v.clone()}
    blocks = torch.randint(3, 96, (10, 16), generator=torch.Generator().manual_seed(0)).tolist()
    data = FineTuneData(blocks[:8], blocks[8:], 16, "random")
    finetune(model, tokenizer, data, tiny_config(block_size=16, weight_decay=0.5, learning_rate=1e-2))
    lone, group = model_heads(model).head_weights(0, 0), model_heads(model).head_weights(1, 4)
    assert torch.equal(lone.q, before["q"]) and torch.equal(lone.o, before["o"])
    assert not torch.equal(lone.k, before["k_shared"])     # K/V head 0 still serves active heads 1-3
    assert torch.equal(group.k, before["gk"]) and torch.equal(group.v, before["gv"])


def test_distillation_loss_matches_a_hand_computation():
    # one scored position, vocabulary of 2: teacher logits (0, ln 3), student logits (0, 0), next token 1
    student = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[0.0, math.log(3.0)], [1.0, 2.0]]])
    labels = torch.tensor([[-100, 1]])
    # T = 1: p_teacher = (1/4, 3/4), p_student = (1/2, 1/2)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    parts = distillation_loss(student, teacher, labels, alpha=0.5, temperature=1.0)
    assert parts.kl.item() == pytest.approx(kl, abs=1e-6)
    assert parts.lm.item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert parts.loss.item() == pytest.approx(0.5 * kl + 0.5 * math.log(2.0), abs=1e-6)
    # T = 2: teacher softened to (1, sqrt 3) / (1 + sqrt 3); the KL term is scaled by T^2 = 4
    p = 1 / (1 + math.sqrt(3))
    kl2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    parts = distillation_loss(student, teacher, labels, alpha=0.25, temperature=2.0)
    assert parts.loss.item() == pytest.approx(0.25 * 4 * kl2 + 0.75 * math.log(2.0), abs=1e-6)


def test_distillation_trainer_loss_is_the_documented_mix(tmp_path):
    student, tokenizer = make_tiny_lm(seed=0)
    teacher, _ = make_tiny_lm(seed=1)
    data = tiny_data(tokenizer)
    from sentinel.training.finetune import _training_arguments

    args = _training_arguments(tiny_config(), 1, True, tmp_path, seed=0)
    trainer = DistillationTrainer(model=student, args=args, train_dataset=TokenBlocks(data.train),
                                  eval_dataset=TokenBlocks(data.validation), processing_class=tokenizer,
                                  teacher=teacher, alpha=0.3, temperature=2.0)
    ids = torch.tensor(data.train[:2])
    loss = trainer.compute_loss(student, {"input_ids": ids, "labels": ids.clone()})
    with torch.no_grad():
        s_logits, t_logits = student(input_ids=ids).logits[:, :-1], teacher(input_ids=ids).logits[:, :-1]
    n = s_logits.shape[0] * s_logits.shape[1]
    kl = F.kl_div(F.log_softmax(s_logits / 2, -1), F.log_softmax(t_logits / 2, -1), log_target=True,
                  reduction="sum") / n
    ce = F.cross_entropy(s_logits.reshape(n, -1), ids[:, 1:].reshape(n))
    assert loss.item() == pytest.approx(0.3 * 4 * kl.item() + 0.7 * ce.item(), rel=1e-5)


def test_finetune_with_distillation_runs_and_reports_both_parts():
    model, tokenizer = make_tiny_lm()
    teacher = copy.deepcopy(model)
    mask_heads(model, {0: [0, 1]})
    config = tiny_config(distill=True, distill_alpha=0.5, distill_temperature=2.0)
    result = finetune(model, tokenizer, tiny_data(tokenizer), config, teacher=teacher)
    assert result.stopped == "completed" and len(result.losses) == 3
    assert [s for s, _, _ in result.distill_parts] == [1, 2, 3]
    for (_, loss), (_, kl, lm) in zip(result.losses, result.distill_parts):
        assert kl >= 0 and loss == pytest.approx(0.5 * 4 * kl + 0.5 * lm, rel=1e-4)   # the logged loss is the mix
    with pytest.raises(Exception, match="teacher"):
        finetune(model, tokenizer, tiny_data(tokenizer), tiny_config(distill=True))


def test_resumed_run_continues_the_learning_rate_schedule():
    schedule = dict(max_steps=6, warmup_ratio=0.34, lr_scheduler="linear", learning_rate=1e-3)
    full: list = []
    model, tokenizer = make_tiny_lm()
    finetune(model, tokenizer, tiny_data(tokenizer), tiny_config(**schedule), on_event=full.append)
    resumed: list = []
    model, tokenizer = make_tiny_lm()
    result = finetune(model, tokenizer, tiny_data(tokenizer), tiny_config(**schedule), on_event=resumed.append,
                      start_step=3)
    rates = {e.step: e.learning_rate for e in full if e.loss is not None}
    assert [(e.step, e.learning_rate) for e in resumed if e.loss is not None] == [(s, rates[s]) for s in (4, 5, 6)]
    assert result.steps == 6 and result.start_step == 3


def test_early_stopping_stops_when_validation_gets_worse():
    model, tokenizer = make_tiny_lm()
    config = tiny_config(max_steps=20, eval_every=1, early_stopping_patience=1, learning_rate=0.5,
                         max_grad_norm=0.0)
    result = finetune(model, tokenizer, tiny_data(tokenizer), config)
    assert result.stopped == "early_stopped" and result.steps < 20
    assert result.evaluations[-1][1] > result.evaluations[-2][1]     # it stopped because validation got worse


def test_config_is_checked_and_round_trips():
    config = FineTuneConfig(max_steps=7, distill=True)
    assert FineTuneConfig.from_dict(config.to_dict()) == config
    for bad in (dict(max_steps=0), dict(learning_rate=0), dict(warmup_ratio=1.0), dict(mixed_precision="fp8"),
                dict(early_stopping_patience=2, eval_every=0), dict(distill_alpha=1.5)):
        with pytest.raises(TrainingConfigError):
            FineTuneConfig(**bad).validate()
    with pytest.raises(TrainingConfigError, match="Unknown"):
        FineTuneConfig.from_dict({"steps": 3})
    result = FineTuneResult(3, 3, "completed", 10.0, 8.0, 100.0, 1.0, [(1, 2.0)], [(0, 10.0)])
    assert FineTuneResult.from_dict(result.to_dict()) == result


def test_fine_tuning_keeps_masked_neurons_and_parts_unchanged():
    from sentinel import mask_layers, mask_neurons
    from sentinel.models import model_state

    model, tokenizer = make_tiny_lm()
    mask_neurons(model, {0: [3, 7]})
    mask_layers(model, [1], part="mlp")
    state = model_state(model)
    frozen = {n: {r: v.detach().clone() for r, v in state.views(0, "neuron", n).items() if v is not None}
              for n in (3, 7)}
    mlp = {name: p.detach().clone() for name, p in model.transformer.h[1].mlp.named_parameters()}
    live = state.views(0, "neuron", 4)["up"].detach().clone()
    finetune(model, tokenizer, tiny_data(tokenizer), tiny_config(weight_decay=0.5))
    for n, views in frozen.items():
        for role, value in views.items():
            assert torch.equal(state.views(0, "neuron", n)[role], value), (n, role)
    for name, p in model.transformer.h[1].mlp.named_parameters():
        assert torch.equal(p, mlp[name]), name
    assert not torch.equal(state.views(0, "neuron", 4)["up"], live)
