"""Shared pieces of the sampler tests: label sets, slow obviously-correct references and the chi-square check.

Statistical tests use Pearson's chi-square statistic against the reference probabilities and reject at
``CHI2_ALPHA = 1e-6``: under the null (correct sampler, i.i.d. draws, every expected count >= 5 so the
chi-square approximation holds) a fixed seed fails with probability 1e-6, and each such test also shows
that the same counts *reject* a nearby wrong distribution, so it can fail.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from torch.utils.data import DistributedSampler

from lt_lightning.data.samplers import LongTailSampler, build_sampler

CHI2_ALPHA = 1e-6

# A long tail with a class of 3 and a singleton; N = 79 (divisible by neither 2 nor 3).
COUNTS = [39, 17, 9, 5, 3, 3, 2, 1]
# Classes 2 and 5 absent, declared K = 7.
GAPPY_COUNTS = [20, 9, 0, 4, 3, 0, 1]
#: the global batch of the "stratified" sampler in tests that build every sampler alike (divisible by 1..4)
STRATIFIED_BATCH = 12


def labels_from_counts(counts: list[int], seed: int = 0) -> torch.Tensor:
    labels = np.repeat(np.arange(len(counts)), counts)
    return torch.from_numpy(np.random.default_rng(seed).permutation(labels))


def make(name: str, labels, **kwargs) -> LongTailSampler:
    """Any sampler of the table, with the options it needs (q = 0.3, T = 4, a global batch of 12)."""
    extra = {"q": 0.3} if name == "power" else {}
    return build_sampler(name, labels, num_epochs=4, batch_size=STRATIFIED_BATCH, **extra, **kwargs)


def reference_power_probs(counts: list[int], q: float) -> np.ndarray:
    weights = np.array([n**q if n > 0 else 0.0 for n in counts])
    return weights / weights.sum()


def reference_progressive_probs(counts: list[int], epoch: int, num_epochs: int) -> np.ndarray:
    lam = min(epoch / (num_epochs - 1), 1.0)
    total, present = sum(counts), sum(1 for n in counts if n > 0)
    weights = np.array([(1 - lam) * n + lam * total / present if n > 0 else 0.0 for n in counts])
    return weights / weights.sum()


def reference_padded_order(order: list[int], num_replicas: int) -> list[int]:
    """The padded global order, rebuilt from torch's own DistributedSampler on positions 0..N-1."""
    n = len(order)
    shards = [
        list(DistributedSampler(range(n), num_replicas=num_replicas, rank=r, shuffle=False))
        for r in range(num_replicas)
    ]
    padded_positions = [shards[r][i] for i in range(len(shards[0])) for r in range(num_replicas)]
    return [order[p] for p in padded_positions]


def chi2_statistic(observed: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom over the cells with positive probability."""
    observed = np.asarray(observed, dtype=np.float64)
    assert observed[probs == 0].sum() == 0, "a zero-probability cell was drawn"
    mask = probs > 0
    expected = probs[mask] * observed.sum()
    assert expected.min() >= 5, "chi-square approximation needs expected counts >= 5"
    return float(((observed[mask] - expected) ** 2 / expected).sum()), int(mask.sum()) - 1


def chi2_accepts(observed: np.ndarray, probs: np.ndarray) -> bool:
    statistic, df = chi2_statistic(observed, probs)
    return statistic <= stats.chi2.ppf(1 - CHI2_ALPHA, df)


def class_histogram(sampler: LongTailSampler, epochs, num_classes: int) -> np.ndarray:
    labels = sampler.labels
    drawn = torch.cat([labels[sampler.global_indices(e)] for e in epochs])
    return torch.bincount(drawn, minlength=num_classes).numpy()
