"""ClassBalancedSampler: Kang's rounds of class visits, per-class streams without replacement, uniformity."""

from __future__ import annotations

from collections import Counter
from itertools import permutations

import numpy as np
import pytest

import lt_lightning.data.samplers.class_balanced as class_balanced_module
from lt_lightning.data.samplers import ClassBalancedSampler, build_sampler
from tests.data.samplers.reference import (
    COUNTS,
    GAPPY_COUNTS,
    chi2_accepts,
    class_histogram,
    labels_from_counts,
    reference_power_probs,
)


def check_kang_structure(order: list[int], labels: list[int], s: int) -> dict[int, list[int]]:
    """Assert Kang's structure on one epoch; return each class's stream (its samples in order)."""
    present = sorted(set(labels))
    members = {c: sorted(i for i, y in enumerate(labels) if y == c) for c in present}
    assert len(order) == len(labels)
    blocks = [order[i : i + s] for i in range(0, len(order), s)]
    visits = []
    for block in blocks:
        block_classes = {labels[i] for i in block}
        assert len(block_classes) == 1, f"block {block} mixes classes {block_classes}"
        visits.append(labels[block[0]])
    assert all(len(b) == s for b in blocks[:-1])
    for r in range(0, len(visits), len(present)):
        round_classes = visits[r : r + len(present)]
        assert len(set(round_classes)) == len(round_classes), "a class visited twice in one round"
        if len(round_classes) == len(present):
            assert sorted(round_classes) == present
    streams = {c: [i for i in order if labels[i] == c] for c in present}
    for c, stream in streams.items():
        n = len(members[c])
        chunks = [stream[i : i + n] for i in range(0, len(stream), n)]
        for chunk in chunks:
            assert len(set(chunk)) == len(chunk), f"class {c} repeats a sample before exhaustion"
            if len(chunk) == n:
                assert sorted(chunk) == members[c]
    return streams


def test_class_balanced_frequencies_are_uniform_over_present_classes() -> None:
    labels = labels_from_counts(GAPPY_COUNTS)
    sampler = ClassBalancedSampler(labels, num_classes=7, seed=5)
    observed = class_histogram(sampler, range(200), 7)
    uniform = np.array([1.0 if n > 0 else 0.0 for n in GAPPY_COUNTS])
    # Rounds make the counts *less* variable than multinomial, so the chi-square bound is conservative.
    assert chi2_accepts(observed, uniform / uniform.sum())
    assert not chi2_accepts(observed, reference_power_probs(GAPPY_COUNTS, 0.3))


@pytest.mark.parametrize(
    ("counts", "s"), [(COUNTS, 4), (COUNTS, 1), (COUNTS, 5), (GAPPY_COUNTS, 4), ([1] * 30 + [2, 50], 4)]
)
@pytest.mark.parametrize("partial", [False, True])
def test_class_balanced_structure(counts: list[int], s: int, partial: bool, monkeypatch) -> None:
    # partial=True makes large classes take the partial Fisher-Yates path (chosen by cost otherwise).
    monkeypatch.setattr(class_balanced_module, "_PARTIAL_STEP_COST", -(10**9) if partial else 10**9)
    labels = labels_from_counts(counts, seed=2)
    sampler = ClassBalancedSampler(labels, samples_per_class=s, num_classes=len(counts), seed=1)
    assert (len(sampler._prefix_shuffle.sizes) > 0) == partial
    for epoch in range(20):
        check_kang_structure(sampler.global_indices(epoch).tolist(), labels.tolist(), s)


@pytest.mark.parametrize("partial", [False, True])
def test_class_balanced_large_class_prefix_is_uniform(partial: bool, monkeypatch) -> None:
    monkeypatch.setattr(class_balanced_module, "_PARTIAL_STEP_COST", -(10**9) if partial else 10**9)
    counts = [30, 2, 2, 1]  # N = 35, 9 visits, 3 rounds: class 0 reads 12 of its 30 samples
    labels = labels_from_counts(counts, seed=3)
    big = [i for i, y in enumerate(labels.tolist()) if y == 0]
    sampler = ClassBalancedSampler(labels, seed=8)
    assert (len(sampler._prefix_shuffle.sizes) == 1) == partial
    first = np.zeros(30)
    for epoch in range(300):
        streams = check_kang_structure(sampler.global_indices(epoch).tolist(), labels.tolist(), 4)
        first[big.index(streams[0][0])] += 1
    assert chi2_accepts(first, np.full(30, 1 / 30))


def test_class_balanced_reshuffles_a_small_class_uniformly() -> None:
    labels = labels_from_counts(COUNTS, seed=4)
    three = [i for i, y in enumerate(labels.tolist()) if y == 4]  # one of the two classes of size 3
    sampler = ClassBalancedSampler(labels, seed=7)
    orders: Counter = Counter()
    round_orders = set()
    for epoch in range(150):
        order = sampler.global_indices(epoch).tolist()
        streams = check_kang_structure(order, labels.tolist(), 4)
        stream = streams[4]
        assert len(stream) >= 8  # >= 2 visits of 4: the class is exhausted and reshuffled
        for i in range(0, len(stream) - 2, 3):
            orders[tuple(three.index(x) for x in stream[i : i + 3])] += 1
        visits = [labels[order[i]].item() for i in range(0, len(order), 4)]
        round_orders.add(tuple(visits[:8]))
    observed = np.array([orders[p] for p in permutations(range(3))])
    assert chi2_accepts(observed, np.full(6, 1 / 6))  # every reshuffle is a uniform permutation
    assert len(round_orders) > 100  # the class list is reshuffled, not fixed


def test_samples_per_class() -> None:
    labels = labels_from_counts(COUNTS)
    assert build_sampler("class", labels, samples_per_class=2).samples_per_class == 2
    with pytest.raises(ValueError, match="samples_per_class"):
        ClassBalancedSampler([0, 1], samples_per_class=0)
