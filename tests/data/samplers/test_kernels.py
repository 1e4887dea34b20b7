"""The random kernels of lt_lightning.data.samplers.kernels against references written from their definitions."""

from __future__ import annotations

from collections import Counter
from itertools import permutations

import numpy as np
import pytest
import torch

from lt_lightning.data.samplers.kernels import PartialShuffle, SegmentedShuffle, alias_draw, alias_table
from tests.data.samplers.reference import chi2_accepts


@pytest.mark.parametrize(
    "weights",
    [
        [5.0, 1.0, 1.0, 1.0],
        [1.0, 1.0, 1.0],  # all scaled weights exactly 1
        [2.0, 1.0, 0.0, 1.0],  # heavy items of scaled weight exactly 1 and a zero
        [1.0, 2.0, 0.5, 0.5],  # the first heavy item has scaled weight exactly 1
        [1.0, 1.0, 3.0, 0.5, 0.5, 0.25, 0.75],
        [1000.0] + [1.0] * 50,
        list(np.random.default_rng(1).pareto(1.0, 300) + 0.01),
        [n**0.5 for n in range(1, 200)],
        [3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5],
    ],
)
def test_alias_table_implies_the_weights(weights: list[float]) -> None:
    prob, alias = alias_table(torch.tensor(weights, dtype=torch.float64))
    k = len(weights)
    assert ((prob >= 0) & (prob <= 1)).all() and ((alias >= 0) & (alias < k)).all()
    implied = np.zeros(k)
    for bucket in range(k):  # reference: every bucket is hit with probability 1/k
        implied[bucket] += prob[bucket].item() / k
        implied[alias[bucket].item()] += (1 - prob[bucket].item()) / k
    np.testing.assert_allclose(implied, np.array(weights) / sum(weights), rtol=0, atol=1e-12)


def test_alias_draw_frequencies() -> None:
    weights = np.array([5.0, 1.0, 0.0, 2.0])
    draws = alias_draw(*alias_table(torch.tensor(weights)), 20_000, torch.Generator().manual_seed(0))
    observed = np.bincount(draws.numpy(), minlength=4)
    assert chi2_accepts(observed, weights / weights.sum())
    assert not chi2_accepts(observed, np.array([4.0, 2.0, 0.0, 2.0]) / 8)


@pytest.mark.parametrize(
    ("sizes", "kwargs"),
    [
        ([0, 1, 2, 3, 3, 7], {}),  # tables for 2..3, sort regime for 7
        ([0, 1, 2, 3, 3, 7], {"table_max": 0, "method": "bits"}),
        ([0, 1, 2, 3, 3, 7], {"table_max": 0, "method": "perm"}),
        # 2 random bits: ~90% of the draws have a collision and are rejected.
        ([0, 1, 2, 3, 3], {"table_max": 0, "method": "bits", "rand_bits": 2}),
        ([0, 1, 2, 3, 3, 7], {"table_max": 1, "randperm_min": 3}),  # one torch.randperm per segment
    ],
)
def test_segmented_shuffle_is_uniform_and_independent(sizes: list[int], kwargs: dict) -> None:
    shuffle = SegmentedShuffle(torch.tensor(sizes), **kwargs)
    generator = torch.Generator().manual_seed(0)
    draws = 3000
    starts = np.cumsum([0, *sizes])
    pair_cells: Counter = Counter()
    first_of_seven = np.zeros(7)
    for _ in range(draws):
        out = shuffle(generator).tolist()
        for size, start in zip(sizes, starts):
            assert sorted(out[start : start + size]) == list(range(size))
        pair_cells[tuple(out[starts[3] : starts[4]]), tuple(out[starts[4] : starts[5]])] += 1
        if len(sizes) > 5:
            first_of_seven[out[starts[5]]] += 1
    # Two size-3 segments: 36 equally likely joint orders (uniform and independent).
    cells = [(a, b) for a in permutations(range(3)) for b in permutations(range(3))]
    observed = np.array([pair_cells[c] for c in cells])
    assert chi2_accepts(observed, np.full(36, 1 / 36))
    if len(sizes) > 5:
        assert chi2_accepts(first_of_seven, np.full(7, 1 / 7))
    # Sensitivity: the same test rejects the bug rejection guards against (few random bits, ties
    # broken by position instead of redrawn), at the same sample size.
    rng = np.random.default_rng(0)
    biased: Counter = Counter()
    for _ in range(draws):
        a, b = (tuple(np.argsort(rng.integers(0, 8, 3), kind="stable").tolist()) for _ in range(2))
        biased[a, b] += 1
    assert not chi2_accepts(np.array([biased[c] for c in cells]), np.full(36, 1 / 36))


def test_partial_shuffle_gives_uniform_ordered_subsets() -> None:
    sizes, k, draws = [3, 5, 40], 3, 3000
    shuffle = PartialShuffle(torch.tensor(sizes), k)
    generator = torch.Generator().manual_seed(2)
    cells: list[Counter] = [Counter() for _ in sizes]
    for _ in range(draws):
        rows = shuffle(generator).tolist()
        for row, size, counter in zip(rows, sizes, cells):
            assert len(set(row)) == k and all(0 <= x < size for x in row)
            counter[tuple(row)] += 1
    for size, counter in zip(sizes[:2], cells[:2]):  # 6 and 60 equally likely ordered subsets
        subsets = list(permutations(range(size), k))
        assert chi2_accepts(np.array([counter[c] for c in subsets]), np.full(len(subsets), 1 / len(subsets)))
    first = np.bincount([row[0] for row in cells[2].elements()], minlength=40)
    assert chi2_accepts(first, np.full(40, 1 / 40))
    with pytest.raises(ValueError, match=">= k"):
        PartialShuffle(torch.tensor([2, 5]), 3)


def test_segmented_shuffle_rejects_unsorted_sizes() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        SegmentedShuffle(torch.tensor([3, 2]))
    with pytest.raises(ValueError, match="method"):
        SegmentedShuffle(torch.tensor([3]), method="quick")
