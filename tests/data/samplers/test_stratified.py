"""Markou's stratified batches (nc/datasets.py StratifiedBatchSampler = StratifiedKFold test folds): every
class spread evenly over the batches of an epoch, each sample at most once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lt_lightning.data.samplers import StratifiedBatchSampler, build_sampler

LABELS = np.repeat(np.arange(6), [200, 120, 70, 40, 23, 11])  # long-tailed, N = 464


def _batches(sampler, epoch=0):
    sampler.set_epoch(epoch)
    idx = np.array(list(sampler))
    return idx.reshape(-1, sampler.batch_size // sampler.num_replicas)


@pytest.mark.parametrize("batch_size", [32, 64, 100])
def test_every_batch_is_stratified_and_samples_appear_once(batch_size):
    s = StratifiedBatchSampler(LABELS, batch_size=batch_size, seed=3)
    b = _batches(s)
    n_batches = len(LABELS) // batch_size
    assert b.shape == (n_batches, batch_size) and len(s) == b.size
    assert len(np.unique(b)) == b.size  # no sample twice; N mod B dropped
    counts = np.stack([np.bincount(LABELS[row], minlength=6) for row in b])  # [batches, K]
    # StratifiedKFold's property: a class's count differs by at most one between any two batches
    assert (counts.max(0) - counts.min(0) <= 1).all(), counts
    # and each class is represented in proportion to its share of the training set
    expected = np.bincount(LABELS, minlength=6) * batch_size / len(LABELS)
    assert (np.abs(counts - expected) <= 1.5).all()


def test_same_seed_and_epoch_same_batches_other_epoch_differs():
    a, b = (
        StratifiedBatchSampler(LABELS, batch_size=50, seed=1),
        StratifiedBatchSampler(LABELS, batch_size=50, seed=1),
    )
    assert np.array_equal(_batches(a, 4), _batches(b, 4))
    assert not np.array_equal(_batches(a, 4), _batches(a, 5))


def test_ddp_ranks_split_each_global_batch():
    full = StratifiedBatchSampler(LABELS, batch_size=64, seed=0, num_replicas=1, rank=0)
    r0 = StratifiedBatchSampler(LABELS, batch_size=64, seed=0, num_replicas=2, rank=0)
    r1 = StratifiedBatchSampler(LABELS, batch_size=64, seed=0, num_replicas=2, rank=1)
    g, b0, b1 = _batches(full), _batches(r0), _batches(r1)
    assert b0.shape == b1.shape == (g.shape[0], 32)
    for glob, x, y in zip(g, b0, b1):
        assert sorted(np.concatenate([x, y])) == sorted(glob)  # step b of both ranks = global batch b
    with pytest.raises(ValueError, match="divisible"):
        StratifiedBatchSampler(LABELS, batch_size=63, num_replicas=2, rank=0)


def test_build_sampler_needs_the_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        build_sampler("stratified", LABELS)
    assert isinstance(build_sampler("stratified", LABELS, batch_size=16), StratifiedBatchSampler)


def test_datamodule_loader_batches_are_the_stratified_batches():
    from tests.models.helpers import synthetic_dm

    dm = synthetic_dm(sampler="stratified", batch_size=32)
    dm.setup("fit")
    loader = dm.train_dataloader()
    sampler = loader.sampler
    expected = _batches(sampler, 0)
    labels = dm.train_dataset.targets
    for (_x, y), idx in zip(loader, expected):
        assert torch.equal(y, torch.as_tensor(labels)[torch.as_tensor(idx)])
    assert len(loader) == expected.shape[0]


def test_regression_a_mid_epoch_skip_is_not_replayed():
    # Regression: StratifiedBatchSampler overrode __iter__ without the skip that skip_next() sets, so a run
    # resumed mid-epoch trained the whole epoch again. It now resumes after the batches already trained.
    for num_replicas, rank in ((1, 0), (2, 1)):
        sampler = StratifiedBatchSampler(LABELS, batch_size=64, seed=2, num_replicas=num_replicas, rank=rank)
        sampler.set_epoch(3)
        per_rank = sampler.batch_size // num_replicas
        uninterrupted = _batches(sampler, 3)
        resumed = StratifiedBatchSampler(LABELS, batch_size=64, seed=2, num_replicas=num_replicas, rank=rank)
        resumed.set_epoch(3)
        resumed.skip_next(2 * per_rank)  # two batches trained before the checkpoint
        rest = np.array(list(resumed)).reshape(-1, per_rank)
        assert np.array_equal(rest, uninterrupted[2:])
