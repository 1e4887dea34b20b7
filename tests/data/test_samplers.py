"""Tests for lt_lightning.data.samplers against references written from the definitions.

Statistical tests use Pearson's chi-square statistic against the reference probabilities and reject at
``CHI2_ALPHA = 1e-6``: under the null (correct sampler, i.i.d. draws, every expected count >= 5 so the
chi-square approximation holds) a fixed seed fails with probability 1e-6, and each such test also shows
that the same counts *reject* a nearby wrong distribution, so it can fail.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DistributedSampler

import lt_lightning.data.samplers as samplers_module
from lt_lightning.data.samplers import (
    SAMPLERS,
    ClassBalancedSampler,
    DistributedEvalSampler,
    InstanceBalancedSampler,
    LongTailSampler,
    PowerSampler,
    ProgressivelyBalancedSampler,
    SquareRootSampler,
    _alias_table,
    _PartialShuffle,
    _SegmentedShuffle,
    build_sampler,
    progressive_lambda,
)

REPO = Path(__file__).resolve().parents[2]
CHI2_ALPHA = 1e-6

# A long tail with a class of 3 and a singleton; N = 79 (divisible by neither 2 nor 3).
COUNTS = [39, 17, 9, 5, 3, 3, 2, 1]
# Classes 2 and 5 absent, declared K = 7.
GAPPY_COUNTS = [20, 9, 0, 4, 3, 0, 1]


def labels_from_counts(counts: list[int], seed: int = 0) -> torch.Tensor:
    labels = np.repeat(np.arange(len(counts)), counts)
    return torch.from_numpy(np.random.default_rng(seed).permutation(labels))


def make(name: str, labels, **kwargs) -> LongTailSampler:
    extra = {"q": 0.3} if name == "power" else {}
    return build_sampler(name, labels, num_epochs=4, **extra, **kwargs)


# --------------------------------------------------------------------------------------------------
# Slow, obviously-correct references
# --------------------------------------------------------------------------------------------------


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


def check_kang_structure(order: list[int], labels: list[int], s: int) -> list[list[int]]:
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


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


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
    prob, alias = _alias_table(torch.tensor(weights, dtype=torch.float64))
    k = len(weights)
    assert ((prob >= 0) & (prob <= 1)).all() and ((alias >= 0) & (alias < k)).all()
    implied = np.zeros(k)
    for bucket in range(k):  # reference: every bucket is hit with probability 1/k
        implied[bucket] += prob[bucket].item() / k
        implied[alias[bucket].item()] += (1 - prob[bucket].item()) / k
    np.testing.assert_allclose(implied, np.array(weights) / sum(weights), rtol=0, atol=1e-12)


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
    shuffle = _SegmentedShuffle(torch.tensor(sizes), **kwargs)
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
    shuffle = _PartialShuffle(torch.tensor(sizes), k)
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
        _PartialShuffle(torch.tensor([2, 5]), 3)


def test_segmented_shuffle_rejects_unsorted_sizes() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        _SegmentedShuffle(torch.tensor([3, 2]))
    with pytest.raises(ValueError, match="method"):
        _SegmentedShuffle(torch.tensor([3]), method="quick")


def test_progressive_lambda_schedule() -> None:
    assert [progressive_lambda(e, 5) for e in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert progressive_lambda(0, 1) == 0.0 and progressive_lambda(1, 1) == 1.0
    assert progressive_lambda(1, 2) == 1.0


# --------------------------------------------------------------------------------------------------
# Frequencies
# --------------------------------------------------------------------------------------------------


def class_histogram(sampler: LongTailSampler, epochs, num_classes: int) -> np.ndarray:
    labels = sampler.labels
    drawn = torch.cat([labels[sampler.global_indices(e)] for e in epochs])
    return torch.bincount(drawn, minlength=num_classes).numpy()


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 1.0])
def test_power_sampler_class_and_sample_frequencies(q: float) -> None:
    labels = labels_from_counts(COUNTS)
    sampler = PowerSampler(labels, q=q, seed=3)
    epochs = range(300)  # 23,700 i.i.d. draws
    observed = class_histogram(sampler, epochs, len(COUNTS))
    probs = reference_power_probs(COUNTS, q)
    np.testing.assert_allclose(sampler.class_probabilities().numpy(), probs, rtol=1e-12)
    assert chi2_accepts(observed, probs)
    wrong_q = q + 0.2 if q < 0.5 else q - 0.2
    assert not chi2_accepts(observed, reference_power_probs(COUNTS, wrong_q))
    # Within a class the sample is uniform: sample i has probability p_c / n_c.
    per_sample = np.bincount(torch.cat([sampler.global_indices(e) for e in epochs]).numpy(), minlength=79)
    sample_probs = probs[labels.numpy()] / np.array(COUNTS)[labels.numpy()]
    assert chi2_accepts(per_sample, sample_probs)


def test_square_root_sampler_is_power_one_half() -> None:
    labels = labels_from_counts(COUNTS)
    for sampler in (SquareRootSampler(labels, seed=1), build_sampler("sqrt", labels, seed=1)):
        assert isinstance(sampler, SquareRootSampler) and sampler.q == 0.5
        observed = class_histogram(sampler, range(200), len(COUNTS))
        assert chi2_accepts(observed, reference_power_probs(COUNTS, 0.5))
        assert not chi2_accepts(observed, reference_power_probs(COUNTS, 0.3))


@pytest.mark.parametrize("epoch", [0, 2, 4, 9])
def test_progressive_sampler_frequencies_at_an_epoch(epoch: int) -> None:
    labels = labels_from_counts(COUNTS)
    num_epochs = 5
    # Many independent draws of the same epoch: vary the seed.
    drawn = torch.cat(
        [
            labels[ProgressivelyBalancedSampler(labels, num_epochs=num_epochs, seed=s).global_indices(epoch)]
            for s in range(250)
        ]
    )
    observed = torch.bincount(drawn, minlength=len(COUNTS)).numpy()
    probs = reference_progressive_probs(COUNTS, epoch, num_epochs)
    sampler = ProgressivelyBalancedSampler(labels, num_epochs=num_epochs)
    np.testing.assert_allclose(sampler.class_probabilities(epoch).numpy(), probs, rtol=1e-12)
    assert chi2_accepts(observed, probs)
    other = reference_progressive_probs(COUNTS, 2 if epoch != 2 else 0, num_epochs)
    assert not chi2_accepts(observed, other)


def test_class_balanced_frequencies_are_uniform_over_present_classes() -> None:
    labels = labels_from_counts(GAPPY_COUNTS)
    sampler = ClassBalancedSampler(labels, num_classes=7, seed=5)
    observed = class_histogram(sampler, range(200), 7)
    uniform = np.array([1.0 if n > 0 else 0.0 for n in GAPPY_COUNTS])
    # Rounds make the counts *less* variable than multinomial, so the chi-square bound is conservative.
    assert chi2_accepts(observed, uniform / uniform.sum())
    assert not chi2_accepts(observed, reference_power_probs(GAPPY_COUNTS, 0.3))


# --------------------------------------------------------------------------------------------------
# Kang's structure
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "s"), [(COUNTS, 4), (COUNTS, 1), (COUNTS, 5), (GAPPY_COUNTS, 4), ([1] * 30 + [2, 50], 4)]
)
@pytest.mark.parametrize("partial", [False, True])
def test_class_balanced_structure(counts: list[int], s: int, partial: bool, monkeypatch) -> None:
    # partial=True makes large classes take the partial Fisher-Yates path (chosen by cost otherwise).
    monkeypatch.setattr(samplers_module, "_PARTIAL_STEP_COST", -(10**9) if partial else 10**9)
    labels = labels_from_counts(counts, seed=2)
    sampler = ClassBalancedSampler(labels, samples_per_class=s, num_classes=len(counts), seed=1)
    assert (len(sampler._prefix_shuffle.sizes) > 0) == partial
    for epoch in range(20):
        check_kang_structure(sampler.global_indices(epoch).tolist(), labels.tolist(), s)


@pytest.mark.parametrize("partial", [False, True])
def test_class_balanced_large_class_prefix_is_uniform(partial: bool, monkeypatch) -> None:
    monkeypatch.setattr(samplers_module, "_PARTIAL_STEP_COST", -(10**9) if partial else 10**9)
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


# --------------------------------------------------------------------------------------------------
# Instance sampler, determinism, inputs
# --------------------------------------------------------------------------------------------------


def test_instance_sampler_is_a_permutation() -> None:
    labels = labels_from_counts(COUNTS)
    sampler = InstanceBalancedSampler(labels, seed=0)
    first_positions = np.zeros(79)
    for epoch in range(400):
        order = sampler.global_indices(epoch)
        assert sorted(order.tolist()) == list(range(79))
        first_positions[order[0]] += 1
    assert chi2_accepts(first_positions, np.full(79, 1 / 79))


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_epoch_draws_n_valid_indices(name: str) -> None:
    labels = labels_from_counts(GAPPY_COUNTS)
    sampler = make(name, labels, num_classes=7)
    for epoch in range(5):
        order = sampler.global_indices(epoch)
        assert order.dtype == torch.int64 and order.shape == (len(labels),)
        assert order.min() >= 0 and order.max() < len(labels)
        assert not set(labels[order].tolist()) & {2, 5}  # empty classes are never drawn


@pytest.mark.parametrize("name", SAMPLERS)
def test_order_depends_only_on_seed_and_epoch(name: str) -> None:
    labels = labels_from_counts(COUNTS)
    torch.manual_seed(0)
    np.random.seed(0)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = make(name, labels, seed=11).global_indices(3)
    assert torch.equal(torch.get_rng_state(), torch_state)  # global RNGs untouched
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    torch.manual_seed(12345)
    np.random.seed(999)
    torch.rand(10)
    again = make(name, labels.tolist(), seed=11).global_indices(3)
    assert torch.equal(first, again)
    assert not torch.equal(first, make(name, labels, seed=11).global_indices(4))
    assert not torch.equal(first, make(name, labels, seed=12).global_indices(3))
    # (seed, epoch) pairs do not collide the way seed + epoch would.
    assert not torch.equal(
        make(name, labels, seed=0).global_indices(1), make(name, labels, seed=1).global_indices(0)
    )


def test_label_containers_agree() -> None:
    labels = labels_from_counts(COUNTS)
    reference = ClassBalancedSampler(labels, seed=2).global_indices(1)
    for container in (labels.tolist(), labels.numpy().astype(np.int32), labels.to(torch.int16)):
        assert torch.equal(ClassBalancedSampler(container, seed=2).global_indices(1), reference)


def test_iter_follows_set_epoch_on_a_single_process() -> None:
    sampler = ClassBalancedSampler(labels_from_counts(COUNTS), seed=4)
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (1, 0, 79)
    assert list(sampler) == sampler.global_indices(0).tolist()
    sampler.set_epoch(6)
    assert list(sampler) == sampler.global_indices(6).tolist()
    assert isinstance(sampler, DistributedSampler)


# --------------------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("num_replicas", [2, 3])
def test_ranks_take_contiguous_slices_of_the_padded_order(name: str, num_replicas: int) -> None:
    labels = labels_from_counts(COUNTS)  # N = 79
    per_rank = math.ceil(79 / num_replicas)
    for epoch in (0, 5):
        shards = []
        for rank in range(num_replicas):
            sampler = make(name, labels, seed=9, num_replicas=num_replicas, rank=rank)
            sampler.set_epoch(epoch)
            shard = list(sampler)
            assert len(sampler) == len(shard) == per_rank
            shards.append(shard)
        padded = reference_padded_order(
            make(name, labels, seed=9).global_indices(epoch).tolist(), num_replicas
        )
        assert [i for shard in shards for i in shard] == padded
        for rank, shard in enumerate(shards):
            assert shard == padded[rank * per_rank : (rank + 1) * per_rank]


@pytest.mark.parametrize(("n", "num_replicas"), [(1, 3), (2, 3), (5, 4), (1, 1)])
def test_padding_when_there_are_few_samples(n: int, num_replicas: int) -> None:
    labels = list(range(n))
    order = InstanceBalancedSampler(labels, seed=1).global_indices(0).tolist()
    shards = [
        list(InstanceBalancedSampler(labels, seed=1, num_replicas=num_replicas, rank=r))
        for r in range(num_replicas)
    ]
    assert [i for shard in shards for i in shard] == reference_padded_order(order, num_replicas)


# --------------------------------------------------------------------------------------------------
# Evaluation sampler
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 5, 10, 11])
@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4])
def test_distributed_eval_sampler_partitions_in_order(n: int, num_replicas: int) -> None:
    dataset = list(range(100, 100 + n))
    shards = [
        list(DistributedEvalSampler(dataset, num_replicas=num_replicas, rank=r)) for r in range(num_replicas)
    ]
    assert [i for shard in shards for i in shard] == list(range(n))  # disjoint, unpadded, in order
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    sampler = DistributedEvalSampler(n, num_replicas=num_replicas, rank=num_replicas - 1)
    assert len(sampler) == len(shards[-1]) and isinstance(sampler, DistributedSampler)
    sampler.set_epoch(7)
    assert list(sampler) == shards[-1]


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: PowerSampler([0, 1], q=-0.1), ValueError, "q must"),
        (lambda: PowerSampler([0, 1], q=1.5), ValueError, "1.5"),
        (lambda: PowerSampler([0, 1], q=float("nan")), ValueError, "nan"),
        (lambda: build_sampler("balanced", [0, 1]), ValueError, "instance, class, sqrt, power, progressive"),
        (lambda: build_sampler("power", [0, 1]), ValueError, "needs q"),
        (lambda: build_sampler("progressive", [0, 1]), ValueError, "needs num_epochs"),
        (lambda: build_sampler("class", [0, 1], q=0.5), ValueError, "only applies"),
        (lambda: ProgressivelyBalancedSampler([0, 1], num_epochs=0), ValueError, "num_epochs"),
        (lambda: InstanceBalancedSampler([]), ValueError, "empty"),
        (lambda: InstanceBalancedSampler([[0, 1], [1, 0]]), ValueError, "one-dimensional"),
        (lambda: InstanceBalancedSampler([0, -1, 2]), ValueError, "-1"),
        (lambda: InstanceBalancedSampler([0, 5], num_classes=3), ValueError, "got 5"),
        (lambda: InstanceBalancedSampler([0.0, 1.0]), TypeError, "integer"),
        (lambda: InstanceBalancedSampler([0, 1], num_classes=0), ValueError, "num_classes"),
        (lambda: InstanceBalancedSampler([0, 1], num_replicas=2, rank=2), ValueError, "rank"),
        (lambda: InstanceBalancedSampler([0, 1], seed=-3), ValueError, "seed"),
        (lambda: ClassBalancedSampler([0, 1], samples_per_class=0), ValueError, "samples_per_class"),
        (lambda: InstanceBalancedSampler([0, 1]).set_epoch(-1), ValueError, "epoch"),
        (lambda: InstanceBalancedSampler([0, 1]).global_indices(-2), ValueError, "epoch"),
        (lambda: DistributedEvalSampler(-1), ValueError, "-1"),
        (lambda: DistributedEvalSampler(object()), TypeError, "len"),
    ],
)
def test_bad_input_raises(build, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()


def test_build_sampler_returns_each_kind() -> None:
    labels = labels_from_counts(COUNTS)
    expected = {
        "instance": InstanceBalancedSampler,
        "class": ClassBalancedSampler,
        "sqrt": SquareRootSampler,
        "power": PowerSampler,
        "progressive": ProgressivelyBalancedSampler,
    }
    assert set(expected) == set(SAMPLERS)
    for name, cls in expected.items():
        assert type(make(name, labels)) is cls
    assert build_sampler("power", labels, q=0.7).q == 0.7
    assert build_sampler("progressive", labels, num_epochs=9).num_epochs == 9
    assert build_sampler("class", labels, samples_per_class=2).samples_per_class == 2


# --------------------------------------------------------------------------------------------------
# Real DDP under Lightning
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.ddp
def test_lightning_ddp_ranks_see_disjoint_slices_of_the_epoch(tmp_path: Path) -> None:
    launcher_vars = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    script = REPO / "tests" / "data" / "ddp_sampler_script.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(records):
        assert record["rank"] == rank and record["world_size"] == 2
        assert record["sampler_world"] == [2, rank]  # defaults resolved from torch.distributed
        assert record["used_sampler"] == "ClassBalancedSampler"  # Lightning did not wrap it
    reference = ClassBalancedSampler(records[0]["labels"], seed=records[0]["seed"])
    seen = {}
    for epoch in ("0", "1"):
        together = records[0]["epochs"][epoch] + records[1]["epochs"][epoch]
        assert len(records[0]["epochs"][epoch]) == len(records[1]["epochs"][epoch])
        assert together == reference_padded_order(reference.global_indices(int(epoch)).tolist(), 2)
        seen[epoch] = together
    assert seen["0"] != seen["1"]  # set_epoch reached the sampler
