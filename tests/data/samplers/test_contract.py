"""The contract every sampler of the SAMPLERS table keeps, checked for each of them (stratified included).

Ranks are simulated with ``num_replicas`` / ``rank`` (the real 2-process run is ``test_ddp.py``).
"""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import pytest
import torch

from lt_lightning.data.samplers import SAMPLER_NAMES, SAMPLERS, LongTailSampler, SamplerName
from tests.data.samplers.reference import COUNTS, GAPPY_COUNTS, labels_from_counts, make

NAMES = list(SAMPLERS)


def padded_epoch(sampler: LongTailSampler, epoch: int) -> list[int]:
    """The single-process epoch of ``sampler`` extended to its ``total_size`` by repeating it from its start."""
    order = sampler.global_indices(epoch).tolist()
    return (order * math.ceil(sampler.total_size / len(order)))[: sampler.total_size]


def test_the_table_is_the_literal() -> None:
    assert tuple(SAMPLERS) == SAMPLER_NAMES == get_args(SamplerName)
    assert all(issubclass(cls, LongTailSampler) for cls in SAMPLERS.values())


@pytest.mark.parametrize("name", NAMES)
def test_no_sampler_overrides_iter(name: str) -> None:
    # the mid-epoch skip lives in LongTailSampler.__iter__; a subclass's own __iter__ would drop it
    assert SAMPLERS[name].__iter__ is LongTailSampler.__iter__


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_and_epoch_same_order_and_set_epoch_changes_it(name: str) -> None:
    labels = labels_from_counts(COUNTS)
    a, b = make(name, labels, seed=11), make(name, labels.tolist(), seed=11)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b) == list(a)  # iterating twice gives the same epoch
    first = list(a)
    a.set_epoch(4)
    assert list(a) != first
    assert list(make(name, labels, seed=12)) != list(make(name, labels, seed=11))


@pytest.mark.parametrize("name", NAMES)
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
    assert torch.equal(first, make(name, labels, seed=11).global_indices(3))
    # (seed, epoch) pairs do not collide the way seed + epoch would.
    assert not torch.equal(
        make(name, labels, seed=0).global_indices(1), make(name, labels, seed=1).global_indices(0)
    )


@pytest.mark.parametrize("name", NAMES)
def test_every_epoch_draws_valid_indices_and_never_an_empty_class(name: str) -> None:
    labels = labels_from_counts(GAPPY_COUNTS)
    sampler = make(name, labels, num_classes=7)
    for epoch in range(5):
        order = sampler.global_indices(epoch)
        assert order.dtype == torch.int64 and order.shape == (sampler.num_total,)
        assert order.min() >= 0 and order.max() < len(labels)
        assert not set(labels[order].tolist()) & {2, 5}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4])
def test_the_ranks_slices_make_the_single_process_epoch(name: str, num_replicas: int) -> None:
    labels = labels_from_counts(COUNTS)
    single = make(name, labels, seed=9)
    for epoch in (0, 2):
        slices = []
        for rank in range(num_replicas):
            sampler = make(name, labels, seed=9, num_replicas=num_replicas, rank=rank)
            sampler.set_epoch(epoch)
            assert torch.equal(sampler.global_indices(epoch), single.global_indices(epoch))  # one global draw
            mine = list(sampler)
            assert len(mine) == len(sampler) == sampler.num_samples  # len
            slices.append(mine)
        together = [i for mine in slices for i in mine]
        assert len(together) == sampler.total_size
        assert sorted(together) == sorted(padded_epoch(sampler, epoch))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("num_replicas", "rank"), [(1, 0), (2, 1), (3, 0), (3, 2)])
def test_skip_next_resumes_the_rank_slice(name: str, num_replicas: int, rank: int) -> None:
    labels = labels_from_counts(COUNTS)
    sampler = make(name, labels, seed=5, num_replicas=num_replicas, rank=rank)
    sampler.set_epoch(3)
    uninterrupted = list(sampler)
    for k in sorted({0, 1, 7, len(sampler) - 1, len(sampler)}):
        resumed = make(name, labels, seed=5, num_replicas=num_replicas, rank=rank)
        resumed.set_epoch(3)
        resumed.skip_next(k)
        assert list(resumed) == uninterrupted[k:]
        assert list(resumed) == uninterrupted  # the skip applies to one epoch only
