"""Observation-balanced sampling of training studies.

Most chest X-ray reports are normal, and a report generator trained on them as they come learns to write the normal
report whatever the image shows. Drawing studies with a weight that grows with the rarity of their findings gives
the rare observations more of the training signal.
"""

from collections.abc import Sequence

import torch

from cxrgen.labels import POSITIVE


def observation_balance_weights(labels: Sequence[Sequence[int]], power: float = 1.0) -> torch.Tensor:
    """Per-study sampling weights from 14-code ``labels`` rows (see :mod:`cxrgen.labels`).

    A study weighs ``max(1, max over its positive observations c of (n_max / n_c) ** power)``, where ``n_c`` counts
    the studies positive for ``c`` and ``n_max`` is the largest such count; studies with no positive observation
    weigh 1. ``power=0`` gives uniform weights, ``power=1`` makes every observation about as frequent as the most
    common one.
    """
    if power < 0:
        raise ValueError(f"balance power must be >= 0, got {power!r}.")
    positive = (torch.as_tensor(labels, dtype=torch.int64) == POSITIVE).float()
    if positive.dim() != 2:
        raise ValueError(
            f"labels: expected one row of observation codes per study, got shape {tuple(positive.shape)}."
        )
    counts = positive.sum(0)
    rarity = torch.where(counts > 0, (counts.max() / counts.clamp(min=1)) ** power, torch.zeros_like(counts))
    return (positive * rarity).max(dim=1).values.clamp(min=1.0)


class WeightedEpochSampler(torch.utils.data.Sampler):
    """Draws ``len(weights)`` indices per epoch with replacement, in proportion to ``weights``.

    The draw depends only on ``(seed, epoch)`` (the Trainer calls :meth:`set_epoch`), so a run resumed from a
    checkpoint sees the same studies in the same order as an uninterrupted one.
    """

    def __init__(self, weights: Sequence[float] | torch.Tensor, seed: int = 0):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        if self.weights.dim() != 1 or len(self.weights) == 0 or (self.weights < 0).any() or self.weights.sum() <= 0:
            raise ValueError("weights: expected a non-empty 1-D sequence of non-negative numbers with a positive sum.")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the studies of ``epoch`` (called by the Trainer at the start of each epoch)."""
        self.epoch = epoch

    def __len__(self):
        return len(self.weights)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist()


__all__ = ["WeightedEpochSampler", "observation_balance_weights"]
