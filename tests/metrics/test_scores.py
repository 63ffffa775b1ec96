"""HeadScores, random and hybrid scores, rank fractions and compute_scores by name."""

from __future__ import annotations

import math

import pytest
import torch

from sentinel import mask_heads
from sentinel.errors import DataError, SentinelError
from sentinel.metrics import HeadScores, compute_scores, hybrid_scores, random_scores, rank_fraction
from tests.conftest import make_tiny_model, sample_ids

nan = math.nan


def test_head_scores_round_trip_and_frame():
    scores = HeadScores("entropy", torch.tensor([[0.5, nan], [1.0, 2.0]]), {"tokens": 10})
    data = scores.to_dict()
    assert data == {"metric": "entropy", "values": [[0.5, None], [1.0, 2.0]], "meta": {"tokens": 10}}
    back = HeadScores.from_dict(data)
    assert torch.equal(torch.isnan(back.values), torch.isnan(scores.values)) and back.metric == "entropy"
    frame = scores.to_frame()
    assert frame["pruned"].tolist() == [False, True, False, False]
    assert frame[["layer", "head"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_rank_fraction_by_hand():
    got = rank_fraction(torch.tensor([[3.0, 1.0], [2.0, nan]], dtype=torch.float64))
    assert got[0].tolist() == [1.0, 0.0] and got[1, 0].item() == 0.5 and math.isnan(got[1, 1].item())
    ties = rank_fraction(torch.tensor([[1.0, 1.0, 2.0]], dtype=torch.float64))
    assert ties.tolist() == [[0.25, 0.25, 1.0]]                    # tied pair shares rank 0.5 of 2


def test_hybrid_by_hand():
    entropy = torch.tensor([[0.9, 0.1, 0.5]], dtype=torch.float64)
    magnitude = torch.tensor([[1.0, 3.0, 2.0]], dtype=torch.float64)
    # entropy ranks (1, 0, 0.5) -> focus (0, 1, 0.5); magnitude ranks (0, 1, 0.5)
    assert hybrid_scores(entropy, magnitude).values.tolist() == [[0.0, 1.0, 0.5]]
    assert hybrid_scores(entropy, magnitude, entropy_weight=1.0).values.tolist() == [[0.0, 1.0, 0.5]]
    magnitude_only = hybrid_scores(entropy, torch.tensor([[3.0, 1.0, 2.0]]), entropy_weight=0.0)
    assert magnitude_only.values.tolist() == [[1.0, 0.0, 0.5]]
    with pytest.raises(SentinelError):
        hybrid_scores(entropy, magnitude, entropy_weight=1.5)


def test_random_scores_are_seeded_and_skip_pruned_heads():
    model = make_tiny_model("gpt2")
    first, again, other = random_scores(model, 3), random_scores(model, 3), random_scores(model, 4)
    assert torch.equal(first.values, again.values) and not torch.equal(first.values, other.values)
    mask_heads(model, {2: [1]})
    masked = random_scores(model, 3).values
    assert math.isnan(masked[2, 1].item())
    assert masked[0, 0].item() == first.values[0, 0].item()          # one head's draw does not depend on others


def test_compute_scores_by_name():
    model = make_tiny_model("gpt2")
    scores = compute_scores(model, ["entropy", "magnitude", "hybrid"], sample_ids())
    assert set(scores) == {"entropy", "entropy_normalized", "magnitude", "hybrid"}
    assert all(s.values.shape == (3, 4) for s in scores.values())
    with pytest.raises(SentinelError, match="choose from entropy"):
        compute_scores(model, ["entropy", "bogus"], sample_ids())
    with pytest.raises(DataError, match="need text"):
        compute_scores(model, ["gradient"])
    assert set(compute_scores(model, ["magnitude", "random"])) == {"magnitude", "random"}   # no text needed
