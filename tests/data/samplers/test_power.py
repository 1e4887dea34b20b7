"""PowerSampler and SquareRootSampler: class frequencies ∝ n_c^q, uniform within a class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lt_lightning.data.samplers import PowerSampler, SquareRootSampler, build_sampler
from tests.data.samplers.reference import (
    COUNTS,
    chi2_accepts,
    class_histogram,
    labels_from_counts,
    reference_power_probs,
)


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


@pytest.mark.parametrize("q", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_bad_q(q) -> None:
    with pytest.raises(ValueError, match="q must be a number in"):
        PowerSampler([0, 1], q=q)
