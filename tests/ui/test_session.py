"""Session copies: pruning a session's model never touches the shared base; undo and reset are exact."""

import pytest
import torch

from sentinel.errors import InvalidPruningPlan
from sentinel.evaluation.size import parameter_count
from sentinel.models import LoadedModel, get_layout
from sentinel.pruning import active_heads, mask_heads
from sentinel.ui.session import PruneStep, WorkingModel
from tests.conftest import make_tiny_model, sample_ids


def loaded(model: torch.nn.Module) -> LoadedModel:
    return LoadedModel(model, None, get_layout(model), torch.device("cpu"), "tiny", 0.0)


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(sample_ids()).logits


def test_pruning_the_copy_leaves_the_base_whole():
    base = loaded(make_tiny_model("gpt2"))
    reference = logits(base.model)
    one, two = WorkingModel(base), WorkingModel(base)
    one.apply({0: [1, 2]}, "mask", "test")
    one.apply({2: [0]}, "remove", "test")
    assert active_heads(base.model) == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3], 2: [0, 1, 2, 3]}
    assert active_heads(two.model) == active_heads(base.model)
    assert torch.equal(logits(base.model), reference)
    assert torch.equal(logits(two.model), reference)
    assert active_heads(one.model) == {0: [0, 3], 1: [0, 1, 2, 3], 2: [1, 2, 3]}


def test_undo_replays_the_remaining_steps_exactly():
    base = loaded(make_tiny_model("gpt2"))
    working = WorkingModel(base)
    working.apply({1: [3]}, "remove", "first")
    after_first = logits(working.model)
    params_after_first = parameter_count(working.model)
    working.apply({0: [0, 1]}, "mask", "second")
    undone = working.undo()
    assert (undone.mode, undone.heads, undone.how) == ("mask", {0: [0, 1]}, "second")
    assert torch.equal(logits(working.model), after_first)
    assert parameter_count(working.model) == params_after_first
    working.undo()
    assert torch.equal(logits(working.model), logits(base.model))
    # GPT-2 heads of 8 dims: removing one head takes 3*8*32 (q,k,v weights) + 3*8 (biases) + 8*32 (c_proj) = 1048.
    assert parameter_count(base.model) - params_after_first == 1048
    with pytest.raises(InvalidPruningPlan, match="Nothing to undo"):
        working.undo()


def test_reset_and_versions():
    working = WorkingModel(loaded(make_tiny_model("gpt2")))
    assert working.version == 0
    working.apply({0: [0]}, "mask", "a")
    working.reset()
    assert working.version == 2 and working.steps == []
    assert working.active() == [(layer, head) for layer in range(3) for head in range(4)]


def test_status_names_masked_and_removed_heads():
    working = WorkingModel(loaded(make_tiny_model("gpt2")))
    working.apply({0: [1]}, "mask", "a")
    working.apply({2: [0, 3]}, "remove", "b")
    assert working.status() == {(0, 1): "masked", (2, 0): "removed", (2, 3): "removed"}
    assert working.pruned() == {0: [1], 2: [0, 3]}
    assert working.history() == [
        {"mode": "mask", "heads": {"0": [1]}, "how": "a", "strategy": None, "ratio": None},
        {"mode": "remove", "heads": {"2": [0, 3]}, "how": "b", "strategy": None, "ratio": None},
    ]
    assert PruneStep.from_dict(working.history()[1]) == working.steps[1]


def test_a_plan_of_pruned_heads_only_is_refused():
    working = WorkingModel(loaded(make_tiny_model("gpt2")))
    working.apply({0: [1]}, "mask", "a")
    with pytest.raises(InvalidPruningPlan, match="already pruned"):
        working.apply({0: [1]}, "mask", "again")
    assert len(working.steps) == 1


def test_a_base_that_was_loaded_masked_stays_masked_in_every_copy():
    model = make_tiny_model("gpt2")
    mask_heads(model, {1: [2]})
    working = WorkingModel(loaded(model))
    assert working.status() == {(1, 2): "masked"}
    assert torch.equal(logits(working.model), logits(model))


def test_grouped_query_removal_must_take_whole_groups():
    working = WorkingModel(loaded(make_tiny_model("llama")))
    with pytest.raises(InvalidPruningPlan, match="Grouped-query"):
        working.apply({0: [0]}, "remove", "half a group")
    assert working.steps == [] and working.status() == {}
    working.apply({0: [0, 1, 2, 3]}, "remove", "one group")
    assert working.status() == {(0, h): "removed" for h in range(4)}
