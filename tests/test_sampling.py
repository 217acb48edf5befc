"""Observation-balanced sampling of training studies (cxrgen.data.sampling)."""

import pytest
import torch

from cxrgen.data.sampling import WeightedEpochSampler, observation_balance_weights
from cxrgen.labels import NEGATIVE, POSITIVE, UNCERTAIN


def labels(*positives, other=0):
    row = [other] * 14
    for index in positives:
        row[index] = POSITIVE
    return row


def test_weights_follow_the_rarest_positive_observation():
    rows = [labels(0)] * 8 + [labels(2)] * 2 + [labels(0, 5)] + [labels(other=NEGATIVE), labels(3, other=UNCERTAIN)]
    # Positive counts: No Finding 9, Cardiomegaly 2, Edema 1, Lung Opacity 1; the most common is 9.
    weights = observation_balance_weights(rows, power=1.0)
    assert weights.tolist() == [1.0] * 8 + [4.5, 4.5, 9.0, 1.0, 9.0]
    assert observation_balance_weights(rows, power=0.5)[8].item() == pytest.approx(4.5**0.5)
    assert observation_balance_weights(rows, power=0.0).tolist() == [1.0] * len(rows)
    with pytest.raises(ValueError, match="power must be >= 0"):
        observation_balance_weights(rows, power=-1)
    with pytest.raises(ValueError, match="one row of observation codes per study"):
        observation_balance_weights(labels(0), power=1)


def test_sampler_draws_by_weight_and_depends_only_on_seed_and_epoch():
    sampler = WeightedEpochSampler([1.0, 0.0, 3.0], seed=4)
    first = list(sampler)
    assert len(first) == len(sampler) == 3 and 1 not in first
    assert list(WeightedEpochSampler([1.0, 0.0, 3.0], seed=4)) == first
    many = WeightedEpochSampler([1.0, 3.0] * 2000, seed=0)
    draws = torch.tensor(list(many))
    assert 0.72 < (draws % 2 == 1).float().mean().item() < 0.78
    epochs = []
    for epoch in range(2):
        many.set_epoch(epoch)
        epochs.append(list(many))
    assert epochs[0] == draws.tolist() and epochs[1] != epochs[0]
    with pytest.raises(ValueError, match="positive sum"):
        WeightedEpochSampler([0.0, 0.0])
