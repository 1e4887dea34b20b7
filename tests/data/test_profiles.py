import math

import pytest
import torch

from lt_lightning.data import long_tail_counts, shot_groups


def _exp_reference(k, n_max, r):
    # Written from the definition n_i = floor(n_max * r^(-i/(K-1))) with exact rational exponent.
    return [math.floor(n_max * (1.0 / r) ** (i / (k - 1.0))) for i in range(k)]


@pytest.mark.parametrize(
    ("k", "n_max", "r", "total"),
    [(10, 5000, 100, 12406), (100, 500, 100, 10847), (10, 5000, 50, 13996), (100, 500, 10, 19573)],
)
def test_published_totals(k, n_max, r, total):
    counts = long_tail_counts(k, n_max, r)
    assert sum(counts) == total
    assert counts == _exp_reference(k, n_max, r)
    assert counts[0] == n_max and counts == sorted(counts, reverse=True)


def test_cifar10_r100_endpoints_and_step_profile():
    counts = long_tail_counts(10, 5000, 100)
    assert counts[-1] == 50
    assert long_tail_counts(10, 5000, 100, "step") == [5000] * 5 + [50] * 5
    assert long_tail_counts(5, 10, 4, "step") == [10, 10, 2, 2, 2]


def test_ratio_one_is_balanced_and_single_class():
    assert long_tail_counts(7, 30, 1) == [30] * 7
    assert long_tail_counts(1, 30, 100) == [30]


def test_cifar100_r100_groups_35_35_30():
    groups = shot_groups(long_tail_counts(100, 500, 100))
    assert torch.bincount(groups, minlength=3).tolist() == [35, 35, 30]


def test_cifar10_r100_has_no_few_shot_class():
    groups = shot_groups(long_tail_counts(10, 5000, 100))
    assert (groups == 2).sum() == 0


def test_shot_group_boundaries_inclusive_medium():
    assert shot_groups([101, 100, 20, 19, 0]).tolist() == [0, 1, 1, 2, 2]
    assert shot_groups([50, 10], many_threshold=40, few_threshold=11).tolist() == [0, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"imbalance_ratio": 0.5}, "imbalance_ratio must be >= 1"),
        ({"imbalance_ratio": float("nan")}, "imbalance_ratio"),
        ({"profile": "linear"}, "unknown long-tail profile 'linear'"),
        ({"num_classes": 0}, "num_classes"),
        ({"max_count": 0}, "max_count"),
    ],
)
def test_long_tail_counts_bad_input(kwargs, match):
    args = {"num_classes": 10, "max_count": 100, "imbalance_ratio": 10, "profile": "exp", **kwargs}
    with pytest.raises(ValueError, match=match):
        long_tail_counts(**args)


def test_shot_groups_bad_input():
    with pytest.raises(ValueError, match="few_threshold"):
        shot_groups([1, 2], many_threshold=10, few_threshold=20)
    with pytest.raises(ValueError, match="non-negative"):
        shot_groups([1, -2])
