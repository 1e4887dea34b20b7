"""InstanceBalancedSampler: every epoch a uniformly random permutation."""

from __future__ import annotations

import numpy as np

from lt_lightning.data.samplers import InstanceBalancedSampler
from tests.data.samplers.reference import COUNTS, chi2_accepts, labels_from_counts


def test_instance_sampler_is_a_permutation() -> None:
    labels = labels_from_counts(COUNTS)
    sampler = InstanceBalancedSampler(labels, seed=0)
    first_positions = np.zeros(79)
    for epoch in range(400):
        order = sampler.global_indices(epoch)
        assert sorted(order.tolist()) == list(range(79))
        first_positions[order[0]] += 1
    assert chi2_accepts(first_positions, np.full(79, 1 / 79))
