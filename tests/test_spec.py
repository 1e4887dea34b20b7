"""lt_lightning.spec: the one shot-group rule, against a per-class loop written from Kang et al.'s
definition (thresholds) and Yang et al.'s configs (class-index ranges); validation and resolution of
explicit ids; the int64 ``[K]`` tensors the annotations promise. (How the datamodules use it is
tests/data/test_shot_groups.py.)"""

from __future__ import annotations

import itertools

import pytest
import torch

from lt_lightning.spec import (
    DEFAULT_FEW_THRESHOLD,
    DEFAULT_MANY_THRESHOLD,
    SHOT_GROUP_NAMES,
    check_shot_groups,
    resolve_shot_groups,
    shot_groups,
    shot_groups_from_boundaries,
)


def reference_thresholds(counts, many, few) -> list[int]:
    """Kang et al.: many if n > many, few if n < few, medium otherwise."""
    return [0 if n > many else 2 if n < few else 1 for n in counts]


def reference_ranges(k, medium_start, few_start) -> list[int]:
    return [0 if c < medium_start else 1 if c < few_start else 2 for c in range(k)]


COUNTS = [500, 101, 100, 99, 21, 20, 19, 1, 0]


@pytest.mark.parametrize(("many", "few"), [(100, 20), (60, 20), (20, 20), (0, 0)])
def test_thresholds_match_the_definition(many, few):
    got = shot_groups(COUNTS, many, few)
    assert got.tolist() == reference_thresholds(COUNTS, many, few)
    assert got.dtype == torch.int64 and got.shape == (len(COUNTS),)
    assert shot_groups(torch.tensor(COUNTS), many, few).tolist() == got.tolist()


def test_the_defaults_are_kangs():
    assert (DEFAULT_MANY_THRESHOLD, DEFAULT_FEW_THRESHOLD) == (100, 20)
    assert SHOT_GROUP_NAMES == ("many", "medium", "few")
    assert shot_groups(COUNTS).tolist() == reference_thresholds(COUNTS, 100, 20)


@pytest.mark.parametrize(("k", "bounds"), [(100, [36, 71]), (5, [0, 5]), (5, [2, 2]), (1, [1, 1])])
def test_ranges_match_the_definition(k, bounds):
    got = shot_groups_from_boundaries(k, bounds)
    assert got.tolist() == reference_ranges(k, *bounds) and got.dtype == torch.int64


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: shot_groups(COUNTS, 10, 20), r"few_threshold \(20\) must be <= many_threshold \(10\)"),
        (lambda: shot_groups([[1, 2]]), r"one-dimensional \[K\]"),
        (lambda: shot_groups([3, -1]), "non-negative"),
        (lambda: shot_groups_from_boundaries(5, [3, 2]), "0 <= medium_start <= few_start <= K=5"),
        (lambda: shot_groups_from_boundaries(5, [1, 6]), "0 <= medium_start <= few_start <= K=5"),
        (lambda: shot_groups_from_boundaries(5, [1]), r"two class indices \[medium_start, few_start\]"),
        (lambda: shot_groups_from_boundaries(5, [1.0, 2]), "two class indices"),
        (lambda: shot_groups_from_boundaries(5, [True, 2]), "two class indices"),
        (lambda: check_shot_groups([0, 1], 3), r"shot_groups must have shape \[3\], got \(2,\)"),
        (lambda: check_shot_groups([0, 1, 3], 3), "integer ids 0 \\(many\\), 1 \\(medium\\), 2 \\(few\\)"),
        (lambda: check_shot_groups([0, -1, 2], 3), "integer ids"),
        (lambda: check_shot_groups([0.0, 1.0, 2.0], 3), "integer ids"),
        (
            lambda: resolve_shot_groups(3, [5, 2, 1], [0, 1, 2]),
            "either class_counts or shot_groups, not both",
        ),
        (lambda: resolve_shot_groups(3, [5, 2]), r"class_counts must have shape \[3\]"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_check_shot_groups_returns_a_cpu_long_tensor():
    got = check_shot_groups(torch.tensor([2, 0, 1], dtype=torch.int32), 3)
    assert got.tolist() == [2, 0, 1] and got.dtype == torch.int64 and got.device.type == "cpu"


def test_resolve_shot_groups_takes_either_form():
    assert resolve_shot_groups(3) is None
    assert resolve_shot_groups(3, shot_groups_=[2, 2, 0]).tolist() == [2, 2, 0]
    counts = [150, 50, 5]
    assert resolve_shot_groups(3, counts).tolist() == reference_thresholds(counts, 100, 20)
    assert resolve_shot_groups(3, counts, many_threshold=40, few_threshold=10).tolist() == [0, 0, 2]


def test_count_order_ranks_by_descending_count():
    import numpy as np

    from lt_lightning.spec import count_order

    rng = np.random.default_rng(1)
    for _ in range(20):
        counts = rng.integers(1, 6, size=int(rng.integers(2, 60)))
        got = count_order(counts.tolist()).tolist()
        assert sorted(got) == list(range(len(counts)))
        assert all(counts[a] >= counts[b] for a, b in itertools.pairwise(got))  # a descending ranking
        if np.all(np.diff(counts) <= 0):
            assert got == list(range(len(counts)))
        else:
            assert got == np.argsort(-counts).tolist()  # ties as numpy's default sort (Yang)
    assert count_order([5, 9, 1, 7]).tolist() == [1, 3, 0, 2]  # by hand
    assert count_order([4, 4, 1]).tolist() == [0, 1, 2] and count_order([3]).tolist() == [0]
    assert count_order(torch.tensor([1, 3])).dtype == torch.int64


def test_ranges_over_count_ranks_match_the_definition():
    counts = [3, 9, 1, 7, 8]  # ranks of classes 0..4: 3, 0, 4, 2, 1
    got = shot_groups_from_boundaries(5, [2, 4], class_counts=counts)
    assert got.tolist() == [1, 0, 2, 1, 0] and got.dtype == torch.int64
    assert shot_groups_from_boundaries(5, [2, 4], class_counts=[9, 8, 7, 3, 1]).tolist() == reference_ranges(
        5, 2, 4
    )
    with pytest.raises(ValueError, match=r"class_counts must have shape \[5\]"):
        shot_groups_from_boundaries(5, [2, 4], class_counts=[1, 2])
