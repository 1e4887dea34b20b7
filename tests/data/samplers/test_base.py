"""LongTailSampler (labels, world, epochs, contiguous padded rank slices) and DistributedEvalSampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from lt_lightning.data.samplers import (
    SAMPLERS,
    ClassBalancedSampler,
    DistributedEvalSampler,
    InstanceBalancedSampler,
    LongTailSampler,
)
from tests.data.samplers.reference import COUNTS, labels_from_counts, make, reference_padded_order

#: the samplers whose ranks take contiguous slices of the padded global order (the base's rank_indices)
PADDED = [name for name, cls in SAMPLERS.items() if cls.rank_indices is LongTailSampler.rank_indices]


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


def test_padded_samplers_are_all_but_stratified() -> None:
    assert PADDED == ["instance", "class", "sqrt", "power", "progressive"]


@pytest.mark.parametrize("name", PADDED)
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


def test_skip_next_bounds() -> None:
    sampler = InstanceBalancedSampler(labels_from_counts(COUNTS), num_replicas=2, rank=1)
    with pytest.raises(ValueError, match="cannot skip 41 samples of an epoch of 40 per rank"):
        sampler.skip_next(41)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="num_samples must be a non-negative integer"):
            sampler.skip_next(bad)
    sampler.skip_next(40)
    assert list(sampler) == []


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


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: InstanceBalancedSampler([]), ValueError, "empty"),
        (lambda: InstanceBalancedSampler([[0, 1], [1, 0]]), ValueError, "one-dimensional"),
        (lambda: InstanceBalancedSampler([0, -1, 2]), ValueError, "-1"),
        (lambda: InstanceBalancedSampler([0, 5], num_classes=3), ValueError, "got 5"),
        (lambda: InstanceBalancedSampler([0.0, 1.0]), TypeError, "integer"),
        (lambda: InstanceBalancedSampler([0, 1], num_classes=0), ValueError, "num_classes"),
        (lambda: InstanceBalancedSampler([0, 1], num_replicas=2, rank=2), ValueError, "rank"),
        (lambda: InstanceBalancedSampler([0, 1], num_replicas=0), ValueError, "num_replicas"),
        (lambda: InstanceBalancedSampler([0, 1], seed=-3), ValueError, "seed"),
        (lambda: InstanceBalancedSampler([0, 1]).set_epoch(-1), ValueError, "epoch"),
        (lambda: InstanceBalancedSampler([0, 1]).global_indices(-2), ValueError, "epoch"),
        (lambda: DistributedEvalSampler(-1), ValueError, "-1"),
        (lambda: DistributedEvalSampler(object()), TypeError, "len"),
        (lambda: DistributedEvalSampler(True), TypeError, "True"),
    ],
)
def test_bad_input_raises(build, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()
