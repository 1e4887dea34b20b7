"""ProgressivelyBalancedSampler: the λ schedule and the class frequencies at an epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lt_lightning.data.samplers import ProgressivelyBalancedSampler, progressive_lambda
from tests.data.samplers.reference import (
    COUNTS,
    chi2_accepts,
    labels_from_counts,
    reference_progressive_probs,
)


def test_progressive_lambda_schedule() -> None:
    assert [progressive_lambda(e, 5) for e in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert progressive_lambda(0, 1) == 0.0 and progressive_lambda(1, 1) == 1.0
    assert progressive_lambda(1, 2) == 1.0


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


def test_bad_schedule_length() -> None:
    with pytest.raises(ValueError, match="num_epochs"):
        ProgressivelyBalancedSampler([0, 1], num_epochs=0)
    with pytest.raises(ValueError, match="epoch"):
        progressive_lambda(-1, 3)
